"""Qwen2.5 / Llama-3.1 chat templates: the project's ids and assistant mask equal HF ``apply_chat_template``.

Offline: a small byte-level BPE ``tokenizers.Tokenizer`` is trained here on a few sentences (with the
pre-tokenizer split of the real Qwen2 / Llama-3 ``tokenizer.json``), wrapped in ``PreTrainedTokenizerFast``
with the real Instruct ``chat_template`` strings below, saved as an HF directory and read back by the project
through ``build_tokenizer("HuggingFaceTokenizer", dir)`` (its ``tokenizer.json``).

The HF-side mask is computed independently of the project: the characters each assistant turn adds after
the generation prompt (``render(messages[:i], add_generation_prompt=True)`` is a prefix of
``render(messages[:i+1])``), up to and including the end-of-turn token, mapped to tokens by offsets.
"""
import pytest

from megatron_sicog.data.chat_template import encode_conversation, encode_prompt, stop_token_ids
from megatron_sicog.data.tokenizer import build_tokenizer

# Qwen2.5-*-Instruct tokenizer_config.json "chat_template"
QWEN25_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Llama-3.1-8B-Instruct tokenizer_config.json "chat_template"
LLAMA31_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# the pre-tokenizer split regexes of the real tokenizer.json files
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")

FAMILIES = {
    "qwen2.5": dict(template=QWEN25_TEMPLATE, split=QWEN2_SPLIT, eot="<|im_end|>",
                    specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
                    eos="<|im_end|>", pad="<|endoftext|>", bos=None),
    "llama3.1": dict(template=LLAMA31_TEMPLATE, split=LLAMA3_SPLIT, eot="<|eot_id|>",
                     specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                               "<|eot_id|>", "<|finetune_right_pad_id|>", "<image>"],
                     eos="<|eot_id|>", pad="<|finetune_right_pad_id|>", bos="<|begin_of_text|>"),
}

CORPUS = [
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
    "What colour is the cat? The cat is red. And the dog? Blue, with 17 spots.",
    "Describe the image in detail.\nThere are two people walking on a beach at sunset.",
    "user assistant system Be brief. Answer with a single word. Yes no maybe",
]

CONVERSATIONS = [
    # one image turn, one reply
    [{"from": "human", "value": "<image>\nWhat colour is the cat?"}, {"from": "gpt", "value": "The cat is red."}],
    # two rounds, whitespace that Llama-3.1's trim removes, digits, tabs and newlines inside replies
    [{"from": "human", "value": "<image>\nDescribe the image in detail.  "},
     {"from": "gpt", "value": "There are two people\nwalking on a beach at sunset."},
     {"from": "human", "value": "  And the dog?\tTell me."}, {"from": "gpt", "value": "Blue, with 17 spots.\nYes"}],
    # the record's own system turn
    [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Is it a cat?"},
     {"from": "gpt", "value": "Yes"}],
]
HF_ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


def _hf_dir(family: str, path):
    """A byte-level BPE tokenizer of `family`'s shape, saved as an HF directory with its chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["split"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=spec["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    kw = dict(eos_token=spec["eos"], pad_token=spec["pad"])
    if spec["bos"]:
        kw["bos_token"] = spec["bos"]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, **kw)
    hf.chat_template = spec["template"]
    hf.save_pretrained(str(path))
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def _render(hf, messages, **kw) -> str:
    return hf.apply_chat_template(messages, tokenize=False, **kw)


def _hf_ids_and_mask(hf, messages, eot):
    """apply_chat_template ids and, computed from characters, the mask over each reply + its end-of-turn."""
    full = _render(hf, messages)
    ids = hf.apply_chat_template(messages, tokenize=True, return_dict=False)
    enc = hf(full, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids  # rendering then tokenizing is what apply_chat_template does
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render(hf, messages[:i], add_generation_prompt=True))
        upto = _render(hf, messages[: i + 1])
        assert full.startswith(upto) and upto.endswith(eot, 0, upto.rindex(eot) + len(eot))
        spans.append((start, upto.rindex(eot) + len(eot)))
    mask = [int(any(s <= a and b <= e for s, e in spans)) for a, b in enc["offset_mapping"]]
    return ids, mask


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    hf = _hf_dir(request.param, d)
    return request.param, hf, build_tokenizer("HuggingFaceTokenizer", d)


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_ids_and_mask_equal_apply_chat_template(family, conv):
    name, hf, ours = family
    conversation = CONVERSATIONS[conv]
    messages = [{"role": HF_ROLE[t["from"]], "content": t["value"]} for t in conversation]
    hf_ids, hf_mask = _hf_ids_and_mask(hf, messages, FAMILIES[name]["eot"])
    ids, mask = encode_conversation(ours, conversation, name)
    assert ours.detokenize(ids) == _render(hf, messages)
    assert ids == hf_ids
    assert mask == hf_mask
    assert sum(mask) > 0
    # the generation prompt: everything before the last reply, plus the assistant prefix
    prompt = encode_prompt(ours, conversation[:-1], name)
    assert prompt == hf.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                            return_dict=False)
    assert stop_token_ids(ours, name)[0] == hf.convert_tokens_to_ids(FAMILIES[name]["eot"])


def test_old_templates_differ_from_instruct(family):
    """qwen2 / llama3 (no default system turn) are not what the Instruct templates render: the test can fail."""
    name, hf, ours = family
    conversation = CONVERSATIONS[0]
    messages = [{"role": HF_ROLE[t["from"]], "content": t["value"]} for t in conversation]
    ids, _ = encode_conversation(ours, conversation, {"qwen2.5": "qwen2", "llama3.1": "llama3"}[name])
    assert ids != hf.apply_chat_template(messages, tokenize=True, return_dict=False)
