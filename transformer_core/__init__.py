"""transformer_core: the finished code of the book *Attention Zero To One*.

Each module holds one concept and is built step by step in a chapter:

=====================  =================================================  =======
module                 what it holds                                      chapter
=====================  =================================================  =======
``attention``          scaled dot-product and multi-head attention        01, 02
``positional``         sinusoidal, learned and rotary positions           03
``layers``, ``blocks`` feed-forward, LayerNorm/RMSNorm, pre/post-norm     04
``gpt``                the GPT model, GPT-2 weights                       05
``sampling``           greedy, temperature, top-k, top-p                  08
``transformer``        the paper's encoder-decoder, beam search           09
``checkpoint``         saving and loading models                          07
=====================  =================================================  =======
"""

from .attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .blocks import DecoderLayer, EncoderLayer, TransformerBlock
from .checkpoint import load_model, save_model
from .gpt import GPT, GPTConfig
from .layers import FeedForward, RMSNorm
from .positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from .sampling import sample_next_token
from .transformer import (
    Transformer,
    TransformerAttention,
    TransformerConfig,
    label_smoothed_cross_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "GPT",
    "GPTConfig",
    "Transformer",
    "TransformerConfig",
    "TransformerAttention",
    "MultiHeadAttention",
    "KVCache",
    "causal_mask",
    "scaled_dot_product_attention",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "sinusoidal_encoding",
    "FeedForward",
    "RMSNorm",
    "TransformerBlock",
    "EncoderLayer",
    "DecoderLayer",
    "sample_next_token",
    "label_smoothed_cross_entropy",
    "save_model",
    "load_model",
]
