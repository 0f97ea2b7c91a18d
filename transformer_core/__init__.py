"""transformer_core: the finished code of the book *Attention Zero To One*.

Each module holds one concept and is built step by step in a chapter:

========================  =================================================  =======
module                    what it holds                                      chapter
========================  =================================================  =======
``attention``             scaled dot-product and multi-head attention, KV    01, 02
                          cache, grouped-query attention
``positional``            sinusoidal, learned and rotary positions           03
``layers``, ``blocks``    feed-forward, LayerNorm/RMSNorm, one block from    04
                          its parts (pre/post-norm, cross-attention), stacks
``gpt``                   the GPT model, GPT-2 weights                       05
``data``                  the story corpus, a reader's text, batches, tasks  06
``tokenizers``            character, word, synthetic-task and byte-level     06
                          BPE tokenizers, one loader for every kind
``training``              the training loop, optimiser groups, checkpoints   07
``evaluation``            text loss per token/character, sampled stories     07
``story_model``           the book's trained story GPT, committed weights    07, 08
``schedules``             warm-up + cosine and the paper's schedule          07
``sampling``              greedy, temperature, top-k, top-p                  08
``transformer``           the paper's encoder-decoder, beam search           09
``t5``                    a T5-style encoder-decoder, Hugging Face's T5      -
``interpret``             head scores: previous-token, induction, entropy    10
``distributed``           data-parallel training under torchrun              12
``checkpoint``            one model file format (also inside training        07
                          checkpoints), one atomic writer
``validation``            argument checks, the configs' shared base          all
``encoder_only``          a BERT-style encoder, masked-language modelling    13
``efficient_attention``   sliding-window and linear attention                14
``flash_attention``       FlashAttention: tiled online softmax, recomputing  14
                          backward
``moe``                   mixture-of-experts feed-forward, MoE GPT           15
``memory``                activation checkpointing, saved-activation meter   16
``deploy``                int8 quantization, ONNX export and ONNX Runtime    16
``viz``                   attention heatmaps and explorers, the loss curve   all
                          (optional: needs matplotlib and ipywidgets)
========================  =================================================  =======

The book's own code is a package of its own, ``attention_book`` (in the repository's ``book/``
folder): the story grammar that wrote the corpus and its parser (``grammar``), the corpus's entropy
floor (``floor``), the English -> Tolan translation task (``translation``), the exercises' checks and
the chapters' small figures. It imports transformer_core, never the other way round.
"""

from .attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from .blocks import Block, DecoderLayer, EncoderLayer, Stack, TransformerBlock
from .checkpoint import load_model, save_model
from .efficient_attention import LinearAttention, SlidingWindowAttention
from .encoder_only import BERT, BERTConfig
from .flash_attention import flash_attention
from .gpt import GPT, GPTConfig
from .layers import FeedForward, RMSNorm
from .memory import enable_activation_checkpointing
from .moe import MoEFeedForward, MoEGPT, MoEGPTConfig
from .positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_encoding,
)
from .sampling import sample_next_token
from .story_model import load_story_model
from .t5 import T5, T5Config
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
    "T5",
    "T5Config",
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
    "Block",
    "Stack",
    "TransformerBlock",
    "EncoderLayer",
    "DecoderLayer",
    "sample_next_token",
    "load_story_model",
    "label_smoothed_cross_entropy",
    "save_model",
    "load_model",
    "BERT",
    "BERTConfig",
    "SlidingWindowAttention",
    "LinearAttention",
    "flash_attention",
    "MoEFeedForward",
    "MoEGPT",
    "MoEGPTConfig",
    "enable_activation_checkpointing",
]
