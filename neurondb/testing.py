"""Tiny random models and tokenizers built from configs, for tests and offline benchmarks.

Nothing here downloads: tokenizers are word-level over a fixed vocabulary, models are
random-initialised from small configs. ``save_tiny(family, path)`` writes a directory that
``neurondb extract PATH`` loads like any Hugging Face checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

WORDS = (
    "the a an it was is this that and or but not very so too of to in on for with as at by "
    "movie film story plot actor acting scene music great terrible good bad awful fine "
    "wonderful boring funny dull best worst love hate yes no maybe true false world sports "
    "business tech news question answer sentence same different is are be does do what why "
    "how who when where which one two three red blue green cat dog house car tree river "
    "happy sad long short old new big small ? . , ! ' : positive negative"
).split()

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>", "<extra_id_0>"]


def tiny_tokenizer(style: str = "bert") -> PreTrainedTokenizerFast:
    """A word-level tokenizer. ``style``: ``bert`` ([CLS] x [SEP]), ``t5`` (x </s>), ``causal``."""
    vocab = {t: i for i, t in enumerate(SPECIALS + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    if style == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        kw = dict(cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    elif style == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])],
        )
        kw = dict(eos_token="</s>", additional_special_tokens=["<extra_id_0>"])
    elif style == "causal":
        kw = dict(eos_token="</s>", bos_token="</s>")
    else:
        raise ValueError(f"unknown tokenizer style {style!r}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", **kw)
    fast.model_max_length = 128
    return fast


VOCAB_SIZE = len(SPECIALS) + len(set(WORDS))


#: the tiny configurations :func:`tiny_config` builds (each maps to one adapter family)
TINY_FAMILIES = ("bert", "roberta", "electra", "distilbert", "gpt2", "t5", "t5-gated", "llama",
                 "mistral", "qwen2")


def tiny_config(family: str, **overrides):
    """A small config for ``family`` in {bert, roberta, electra, distilbert, gpt2, t5,
    t5-gated, llama, mistral, qwen2}."""
    import transformers as tf

    v = VOCAB_SIZE
    common = dict(vocab_size=v, pad_token_id=0)
    if family in ("bert", "roberta", "electra"):
        cls = {"bert": tf.BertConfig, "roberta": tf.RobertaConfig, "electra": tf.ElectraConfig}[family]
        extra = {"embedding_size": 32} if family == "electra" else {}
        cfg = cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                  max_position_embeddings=160, **common, **extra)
    elif family == "distilbert":
        cfg = tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                  max_position_embeddings=160, **common)
    elif family == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=48, n_positions=160,
                            vocab_size=v, bos_token_id=5, eos_token_id=5, pad_token_id=0)
    elif family in ("t5", "t5-gated"):
        cfg = tf.T5Config(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                          num_heads=4, vocab_size=v, pad_token_id=0, eos_token_id=5,
                          decoder_start_token_id=0,
                          feed_forward_proj="gated-gelu" if family == "t5-gated" else "relu")
    elif family in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig, "qwen2": tf.Qwen2Config}[family]
        cfg = cls(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, vocab_size=v,
                  pad_token_id=0, bos_token_id=5, eos_token_id=5, tie_word_embeddings=False)
    else:
        raise ValueError(f"unknown tiny family {family!r}")
    for k, val in overrides.items():
        setattr(cfg, k, val)
    return cfg


TOKENIZER_STYLE = {"gpt2": "causal", "llama": "causal", "mistral": "causal", "qwen2": "causal",
                   "t5": "t5", "t5-gated": "t5"}


def tiny_model(family: str, head: str = "lm", seed: int = 0, **overrides):
    """``(model, tokenizer)``: a random tiny model in eval mode.

    ``head``: ``lm`` (masked LM for encoders, causal LM for decoders, seq2seq for T5),
    ``cls`` (sequence classification, 2 labels) or ``base`` (no head).
    """
    import transformers as tf

    cfg = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    encoder = family in ("bert", "roberta", "electra", "distilbert")
    if head == "base":
        auto = tf.AutoModel if not family.startswith("t5") else tf.T5EncoderModel
    elif head == "cls":
        auto = tf.AutoModelForSequenceClassification
    elif family.startswith("t5"):
        auto = tf.AutoModelForSeq2SeqLM
    elif encoder:
        auto = tf.AutoModelForMaskedLM
    else:
        auto = tf.AutoModelForCausalLM
    model = auto.from_config(cfg) if hasattr(auto, "from_config") else auto(cfg)
    model.eval()
    return model, tiny_tokenizer(TOKENIZER_STYLE.get(family, "bert"))


def save_tiny(family: str, path: str | Path, head: str = "lm", seed: int = 0, **overrides) -> Path:
    """Write a tiny random model and its tokenizer to ``path``; returns the path."""
    path = Path(path)
    model, tok = tiny_model(family, head=head, seed=seed, **overrides)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
