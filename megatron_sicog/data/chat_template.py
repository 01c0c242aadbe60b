"""Chat templates: LLaVA conversations -> token ids + assistant-only loss mask.

Templates (``--chat-template``):

* ``qwen2``  ``<|im_start|>role\\n...<|im_end|>\\n`` per turn;
* ``llama3`` ``<|begin_of_text|>`` then
  ``<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>`` per turn;
* ``qwen2.5`` as the Qwen2.5-Instruct ``chat_template`` renders it: ``qwen2`` plus
  its default system turn ("You are Qwen, created by Alibaba Cloud. You are a
  helpful assistant.") when the conversation has none;
* ``llama3.1`` as the Llama-3.1-Instruct ``chat_template`` renders it: ``llama3``
  plus the system turn it always writes ("Cutting Knowledge Date: December
  2023\\nToday Date: 26 Jul 2024\\n\\n" + the system text), every content
  stripped of surrounding whitespace (its ``| trim``);
* ``plain``  LLaVA-pretrain style: the human text, then the assistant text and
  ``eod``; no markers.

``qwen2.5`` and ``llama3.1`` give the token ids of ``apply_chat_template`` with
those templates (tests/test_hf_chat_templates.py compares ids and the
assistant mask): use them to fine-tune the Instruct checkpoints in the format
they were trained on. One known difference: a Qwen2.5 reply that itself starts
with a newline is split differently (the project tokenises the reply apart from
the ``assistant\\n`` prefix so the loss boundary is a token boundary).

`encode_conversation(tok, conversations, template, system=None)` returns
``(token_ids, loss_mask)``: the mask is 1 exactly on assistant-reply tokens,
including the end-of-turn token that closes each assistant turn (``<|im_end|>``,
``<|eot_id|>``, ``eod`` for plain), 0 elsewhere. ``<image>`` in a human turn is
exactly one ``tok.image_token_id``; ``<image>`` elsewhere is an error.

How text is encoded: a conversation is planned as parts (text, a special
string, the image token, eod); adjacent text with the same mask is merged and
each merged segment is tokenised on its own, so a mask boundary is always a
token boundary. Special strings that are ONE token of the tokenizer are
inserted by id; otherwise they are encoded as text. Many conversations are
encoded with one ``tokenize_batch`` call (`encode_conversations_spans`), which
is what makes the converter fast.

`encode_prompt(tok, turns_without_final_reply, template)` ends with the
assistant generation prefix; `stop_token_ids(tok, template)` lists the ids that
end a reply.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

from ..prompts import IMAGE_PLACEHOLDER

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}

# part kinds
_TEXT, _SPECIAL, _IMAGE, _EOD, _OPTIONAL = 0, 1, 2, 3, 4
Part = tuple  # (kind, value, mask)


@dataclass(frozen=True)
class ChatTemplate:
    """One template: what wraps a turn, what opens a conversation and a reply."""

    name: str
    begin: tuple = ()            # special strings at the start (dropped when not one token)
    turn_open: tuple = ()        # (kind, value) parts; value may contain "{role}"
    turn_close: tuple = ()       # closing parts; the first is in the assistant loss
    end_of_turn: Optional[str] = None  # the closing special, a stop token
    eod_after_reply: bool = False      # plain: eod closes each assistant reply
    default_system: Optional[str] = None  # system text written when the conversation has none
    system_prefix: Optional[str] = None   # not None: a system turn is always written, this before its text
    strip_content: bool = False           # every turn's text stripped (Jinja ``| trim``)

    def special_strings(self) -> list[str]:
        out = list(self.begin)
        for kind, value in self.turn_open + self.turn_close:
            if kind == _SPECIAL:
                out.append(value)
        return out


TEMPLATES: dict[str, ChatTemplate] = {
    "qwen2": ChatTemplate(
        name="qwen2",
        turn_open=((_SPECIAL, "<|im_start|>"), (_TEXT, "{role}\n")),
        turn_close=((_SPECIAL, "<|im_end|>"), (_TEXT, "\n")),
        end_of_turn="<|im_end|>",
    ),
    "llama3": ChatTemplate(
        name="llama3",
        begin=("<|begin_of_text|>",),
        turn_open=((_SPECIAL, "<|start_header_id|>"), (_TEXT, "{role}"),
                   (_SPECIAL, "<|end_header_id|>"), (_TEXT, "\n\n")),
        turn_close=((_SPECIAL, "<|eot_id|>"),),
        end_of_turn="<|eot_id|>",
    ),
    "plain": ChatTemplate(name="plain", eod_after_reply=True),
}
TEMPLATES["qwen2.5"] = replace(TEMPLATES["qwen2"], name="qwen2.5",
                               default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
TEMPLATES["llama3.1"] = replace(TEMPLATES["llama3"], name="llama3.1", strip_content=True,
                                system_prefix="Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")


def _system_turn(tpl: ChatTemplate, turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The turns with the template's own system turn (default text, fixed prefix) in front."""
    if tpl.strip_content:
        turns = [(r, t.strip()) for r, t in turns]
    if tpl.default_system is None and tpl.system_prefix is None:
        return turns
    if turns and turns[0][0] == "system":
        text, turns = turns[0][1], turns[1:]
    elif tpl.system_prefix is not None:
        text = ""
    else:
        text = tpl.default_system
    return [("system", (tpl.system_prefix or "") + text)] + turns


def get_template(template: Union[str, ChatTemplate]) -> ChatTemplate:
    if isinstance(template, ChatTemplate):
        return template
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; expected one of {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def _content_parts(text: str, role: str, mask: int) -> list[Part]:
    if IMAGE_PLACEHOLDER not in text:
        return [(_TEXT, text, mask)]
    if role != "user":
        raise ValueError(f"{IMAGE_PLACEHOLDER} in a {role} turn (only human turns may hold images)")
    parts: list[Part] = []
    pieces = text.split(IMAGE_PLACEHOLDER)
    for i, piece in enumerate(pieces):
        if i:
            parts.append((_IMAGE, None, mask))
        if piece:
            parts.append((_TEXT, piece, mask))
    return parts


def _turn_parts(tpl: ChatTemplate, role: str, content: Optional[str]) -> list[Part]:
    """Parts of one turn; `content=None` gives only the opening (generation prefix)."""
    is_reply = role == "assistant"
    parts: list[Part] = [(k, v.replace("{role}", role) if k == _TEXT else v, 0) for k, v in tpl.turn_open]
    if content is None:
        return parts
    parts += _content_parts(content, role, int(is_reply))
    for i, (k, v) in enumerate(tpl.turn_close):
        parts.append((k, v, int(is_reply and i == 0)))
    if tpl.eod_after_reply and is_reply:
        parts.append((_EOD, None, 1))
    return parts


def _turns(conversations: Sequence[dict], system: Optional[str]) -> list[tuple[str, str]]:
    """Validated (role, text) pairs; raises ValueError naming the problem."""
    if not isinstance(conversations, (list, tuple)) or not conversations:
        raise ValueError("'conversations' must be a non-empty list")
    out: list[tuple[str, str]] = []
    if system is not None:
        out.append(("system", system))
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {i} is {type(turn).__name__}, not an object")
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise ValueError(f"turn {i}: unknown role {turn.get('from')!r} (expected one of {sorted(ROLES)})")
        value = turn.get("value")
        if not isinstance(value, str):
            raise ValueError(f"turn {i}: 'value' must be a string")
        if role == "system" and system is not None:
            continue  # an explicit system argument replaces the record's
        out.append((role, value))
    return out


def plan_conversation(conversations: Sequence[dict], template: Union[str, ChatTemplate],
                      system: Optional[str] = None, add_generation_prompt: bool = False,
                      require_reply: bool = True) -> list[Part]:
    """The parts of a whole conversation (validated)."""
    tpl = get_template(template)
    turns = _system_turn(tpl, _turns(conversations, system))
    if require_reply and not any(r == "assistant" for r, _ in turns):
        raise ValueError("no assistant turn")
    parts: list[Part] = [(_OPTIONAL, s, 0) for s in tpl.begin]
    for role, text in turns:
        parts += _turn_parts(tpl, role, text)
    if add_generation_prompt:
        parts += _turn_parts(tpl, "assistant", None)
    return parts


def plan_text(text: str) -> list[Part]:
    """A plain pre-training document: all tokens are targets, then eod."""
    if IMAGE_PLACEHOLDER in text:
        return _content_parts(text, "user", 1) + [(_EOD, None, 1)]
    return [(_TEXT, text, 1), (_EOD, None, 1)]


def _merge(parts: list[Part], tok) -> list[Part]:
    """Resolve specials to ids (or text) and merge adjacent same-mask text."""
    out: list[Part] = []
    for kind, value, mask in parts:
        if kind in (_SPECIAL, _OPTIONAL):
            tid = tok.token_to_id(value)
            if tid is not None:
                out.append((_SPECIAL, tid, mask))
                continue
            if kind == _OPTIONAL:
                continue
            kind = _TEXT
        if kind == _TEXT and out and out[-1][0] == _TEXT and out[-1][2] == mask:
            out[-1] = (_TEXT, out[-1][1] + value, mask)
        elif kind == _TEXT and not value:
            continue
        else:
            out.append((kind, value, mask))
    return out


def encode_plans_spans(tok, plans: Sequence[list[Part]]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Encode many plans with ONE tokenize_batch call; returns (ids, loss spans).

    Loss spans are ``[start, end)`` token ranges with mask 1, merged when adjacent.
    """
    merged = [_merge(p, tok) for p in plans]
    texts = [v for p in merged for k, v, _ in p if k == _TEXT]
    encoded = iter(tok.tokenize_batch(texts) if texts else [])
    image_id = None
    out = []
    for p in merged:
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        for kind, value, mask in p:
            start = len(ids)
            if kind == _TEXT:
                ids.extend(next(encoded))
            elif kind == _SPECIAL:
                ids.append(value)
            elif kind == _IMAGE:
                if image_id is None:
                    image_id = tok.image_token_id
                ids.append(image_id)
            else:  # _EOD
                ids.append(tok.eod)
            end = len(ids)
            if mask and end > start:
                if spans and spans[-1][1] == start:
                    spans[-1] = (spans[-1][0], end)
                else:
                    spans.append((start, end))
        out.append((ids, spans))
    return out


def spans_to_mask(length: int, spans: Sequence[Sequence[int]]) -> list[int]:
    mask = [0] * length
    for s, e in spans:
        mask[s:e] = [1] * (e - s)
    return mask


def encode_conversation(tokenizer, conversations: Sequence[dict], template: Union[str, ChatTemplate],
                        system: Optional[str] = None) -> tuple[list[int], list[int]]:
    """``(token_ids, loss_mask)`` of one LLaVA conversation (see module docstring)."""
    (ids, spans), = encode_plans_spans(tokenizer, [plan_conversation(conversations, template, system)])
    return ids, spans_to_mask(len(ids), spans)


def encode_prompt(tokenizer, conversations: Sequence[dict], template: Union[str, ChatTemplate],
                  system: Optional[str] = None) -> list[int]:
    """Token ids of the turns so far plus the assistant generation prefix."""
    plan = plan_conversation(conversations, template, system, add_generation_prompt=True,
                             require_reply=False)
    (ids, _), = encode_plans_spans(tokenizer, [plan])
    return ids


def stop_token_ids(tokenizer, template: Union[str, ChatTemplate]) -> list[int]:
    """Ids that end an assistant reply: the end-of-turn token (if one token) and eod."""
    tpl = get_template(template)
    out = []
    if tpl.end_of_turn is not None:
        tid = tokenizer.token_to_id(tpl.end_of_turn)
        if tid is not None:
            out.append(tid)
    if tokenizer.eod not in out:
        out.append(tokenizer.eod)
    return out
