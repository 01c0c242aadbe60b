"""The chat template of a Hugging Face directory, named as the project template that renders the same text.

* `read_hf_chat_template(dir)` -> the Jinja string or None: ``chat_template.jinja``,
  else ``chat_template.json``'s ``chat_template``, else ``tokenizer_config.json``'s
  ``chat_template`` (a list of named templates: the one named ``default``);
* `match_chat_template(jinja, special_tokens)` -> the name of the template of
  `data.chat_template` (``qwen2``, ``qwen2.5``, ``llama3``, ``llama3.1``, ``plain``)
  whose Jinja (`hf_tokenizer.chat_template_jinja`) renders the same text as
  `jinja` on a few probe conversations (with and without a system turn, several
  turns, with and without the generation prompt), or None.

hf-to-megatron records the match as ``meta.json`` ``chat_template``, which the
inference tools take when no ``--chat-template`` is given; an unmatched template
is kept as ``meta.json`` ``hf.chat_template`` and those tools then ask for
``--chat-template`` instead of guessing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

PROBES = (
    [{"role": "user", "content": "Describe the image."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is it?"}],
    [{"role": "user", "content": " Hello "}, {"role": "assistant", "content": "Hi there."},
     {"role": "user", "content": "Count the shapes.\nThen stop."}],
)


def read_hf_chat_template(path: str | Path) -> Optional[str]:
    """The chat template stored in HF directory `path`, or None."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        f = path / name
        if not f.is_file():
            continue
        tpl = json.loads(f.read_text()).get("chat_template")
        if isinstance(tpl, list):  # [{"name": ..., "template": ...}, ...]
            tpl = next((t.get("template") for t in tpl if t.get("name") == "default"), None)
        if isinstance(tpl, str):
            return tpl
    return None


def special_tokens(path: str | Path) -> dict[str, str]:
    """bos/eos tokens named by the directory's tokenizer_config.json (what templates may print)."""
    f = Path(path) / "tokenizer_config.json"
    cfg = json.loads(f.read_text()) if f.is_file() else {}
    out = {}
    for k in ("bos_token", "eos_token"):
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        out[k] = v if isinstance(v, str) else ""
    return out


def _render(template: str, messages: list[dict], generation: bool, specials: dict) -> Optional[str]:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=generation,
                                            **specials)
    except Exception:  # noqa: BLE001 - a template may refuse a probe (e.g. no system role): no match
        return None
    return rendered[0]


def match_chat_template(template: str, specials: Optional[dict] = None) -> Optional[str]:
    """The project template rendering what `template` renders on every probe, or None."""
    from megatron_sicog.conversion.hf_tokenizer import chat_template_jinja
    from megatron_sicog.data.chat_template import TEMPLATES

    specials = specials or {"bos_token": "", "eos_token": ""}
    want = [_render(template, m, g, specials) for m in PROBES for g in (False, True)]
    if any(w is None for w in want):
        return None
    for name in sorted(TEMPLATES):
        if name == "plain":  # the LLaVA-pretrain concatenation: never an Instruct model's template
            continue
        ours = chat_template_jinja(name)
        if [_render(ours, m, g, specials) for m in PROBES for g in (False, True)] == want:
            return name
    return None
