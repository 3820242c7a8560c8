"""Small runnable lessons: parts of the lecture retold in plain Python, each checked by tests/.

    python -m lessons.message_passing    attention node by node on a graph, equal to model.py's batched attention
    python -m lessons.build_up           from a bigram table to the GPT, one idea per step, each step measured
    python -m lessons.encoder_decoder    the encoder (the mask off) and the encoder-decoder (cross-attention)
    python -m lessons.sparse_attention   BigBird: change which tokens may talk
    python -m lessons.vit                patches as tokens: a Vision Transformer made of model.py's Blocks
    python -m lessons.infinite_memory    memory beyond the window: the infinity-former's continuous memory
"""
