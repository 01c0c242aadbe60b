"""megatron-sicog: SICOG self-improving multimodal training on megatron-core.

Layout: `runtime` (the only module that knows the machine), `model/` (LLaVA-style
model on megatron-core), `prompts` (CoD / CoT formats shared by generation,
curation and the converter), `io` (records in, atomic files out), and one
folder per SICOG stage.
"""

__version__ = "0.1.0"
