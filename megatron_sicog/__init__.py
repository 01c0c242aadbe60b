"""megatron-sicog: SICOG self-improving multimodal training on megatron-core.

Layout: `runtime` (the only module that knows the machine), `mcore_compat` (every
megatron-core internal the package uses), `model/` (LLaVA-style model on
megatron-core), `prompts` (CoD / CoT formats shared by generation, curation and
the converter), `records` (the record formats), `io` (records in, atomic files
out), `data/` (tokenizer, chat templates, the mmap indexed format, length
fitting), `training/` (the trainer behind pretrain_sicog.py), `generation/`
(candidate sampling), `curation/` (self-consistency voting), `conversion/` (HF
<-> megatron checkpoints), `evaluation/` (scoring, benchmarks), `synthetic/` (the
tiny demo's generated world) and `loop` (the tiny demo's end-to-end round).
"""

__version__ = "0.1.0"

from megatron_sicog import mcore_import as _mcore_import

_mcore_import.install()  # megatron-core's torch.compile decorators compile on first call, not at import
