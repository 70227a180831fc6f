"""The built-in tokenizer of the small presets (``nano``, ``test-tiny``).

Real checkpoints bring their own tokenizer (LLaVA's Llama tokenizer plus ``<mask>``). The small
presets use a byte-level BPE trained locally on the project's own text: every prompt of the task
registry, the answer formats, class and organ names. Digits are split one per token, so
coordinates like ``0.125`` tokenise uniformly. Nothing is downloaded.

Special tokens have fixed ids, matching the presets: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2,
``<unk>`` 3, ``<image>`` 4, ``<mask>`` 5.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from transformers import PreTrainedTokenizerFast

from omnipath_lvlm.config import IMAGE_TOKEN, MASK_TOKEN

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN, MASK_TOKEN)
BUILTIN_VOCAB_SIZE = 2048


def _wrap(tokenizer_file: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens=[IMAGE_TOKEN, MASK_TOKEN],
    )


def default_tokenizer() -> PreTrainedTokenizerFast:
    """The shipped built-in tokenizer (``resources/tokenizer/tokenizer.json``)."""
    path = resources.files("omnipath_lvlm.resources") / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"built-in tokenizer {path} is missing: run `python scripts/build_tokenizer.py`")
    return _wrap(str(path))


def corpus(seed: int = 0) -> Iterator[str]:
    """The text the built-in tokenizer is trained on: prompts, answer formats, labels."""
    from omnipath_lvlm.data.formats import format_boxes, format_detections, format_polygons
    from omnipath_lvlm.data.tasks import list_tasks

    rng = random.Random(seed)
    words = set()
    for task in list_tasks():
        for prompt in (*task.prompts, *task.paper_prompts):
            yield prompt
        words.update(task.classes)
        words.add(task.title)
    for word in sorted(words):
        yield f"{word}. The answer is {word}."
    for _ in range(300):
        boxes = [sorted([rng.random(), rng.random()]) for _ in range(2 * rng.randint(1, 4))]
        pairs = [(boxes[i][0], boxes[i + 1][0], boxes[i][1], boxes[i + 1][1]) for i in range(0, len(boxes), 2)]
        yield format_boxes(pairs)
        yield format_polygons([[(rng.random(), rng.random()) for _ in range(rng.randint(3, 8))]])
        yield format_detections({rng.choice(sorted(words) or ["tumour"]): pairs})
    for letter in "ABCDEFGH":
        yield f"{letter}. option {letter}"
    yield "USER: ASSISTANT: yes no Yes No Region at x y of the slide detail"


def train_builtin_tokenizer(texts: Iterable[str], vocab_size: int = BUILTIN_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with the fixed special tokens on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise RuntimeError(f"special token {token} got id {tok.token_to_id(token)}, expected {i}")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tok.save(str(path))
        return _wrap(str(path))
