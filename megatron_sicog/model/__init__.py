"""The LLaVA-style multimodal model on megatron-core: ViT + MLP projector + GPT LM."""
