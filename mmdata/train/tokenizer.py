"""Tokenizers: a byte-level BPE trained on the dataset's text, and how prompts are rendered.

The built-in model has no pretrained vocabulary, so :func:`train_tokenizer` learns a
byte-level BPE (``tokenizers``) from the train split's prompts and responses — byte level,
so any later text (Japanese notes, unseen asset names) still encodes — and wraps it as a
transformers fast tokenizer with a small chat template. It is saved with
``save_pretrained`` (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``)
and read back with :func:`load_tokenizer`; nothing is downloaded.

:class:`PromptFormat` turns a sample into token ids the same way for the built-in tokenizer
and for a user's pretrained one (``--base-model``): the user turn is rendered with the
tokenizer's chat template (a plain ``User:/Assistant:`` layout when it has none), the text is
cut at the media placeholders, each piece is tokenized on its own, and each placeholder
becomes ``k`` slots that the model fills with projected features. The placeholders never
reach the tokenizer, so no special tokens have to be added to a pretrained vocabulary.

>>> tok = train_tokenizer(["Is the press normal?", "normal", "bearing_wear"] * 20, 300)
>>> fmt = PromptFormat(tok, tokens_per_medium=2)
>>> enc = fmt.encode_prompt("<image>Is the press normal?")
>>> [enc.ids[i] for i in enc.slots[0]] == [tok.pad_token_id] * 2
True
>>> tok.decode(fmt.encode_response("normal"), skip_special_tokens=True)
'normal'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdata.errors import DependencyError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SENSOR_TOKEN = "<sensor>"  # noqa: S105 (a placeholder, not a secret)
#: Placeholders cut out of the rendered prompt, one media slot group each.
PLACEHOLDER_RE = re.compile(r"(<image>|<audio>|<sensor>)")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
FALLBACK_LAYOUT = "User: {prompt}\nAssistant: "


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE trained on ``texts``, as a transformers fast tokenizer.

    Placeholders are removed from the training text (they never reach the tokenizer).

    >>> tok = train_tokenizer(["surface_scratch on press-1"] * 5, 300)
    >>> tok.pad_token, tok.eos_token, tok.chat_template == CHAT_TEMPLATE
    ('<pad>', '</s>', True)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, UNK, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((PLACEHOLDER_RE.sub(" ", t) for t in texts), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 1 << 20
    return tok


def load_tokenizer(path: Path | str) -> Any:
    """A tokenizer folder written by ``save_pretrained`` (local files only).

    >>> load_tokenizer("/nonexistent/tok")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mmdata.errors.DependencyError: cannot load a tokenizer from '/nonexistent/tok'...
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises OSError, ValueError, ...
        raise DependencyError(
            f"cannot load a tokenizer from {str(path)!r}: {type(err).__name__}: {err}"[:400],
            hint="give a model folder that holds its tokenizer (save_pretrained writes one)",
        ) from err
    if tok.pad_token_id is None:  # many causal LMs ship without one; eos is the usual stand-in
        tok.pad_token = tok.eos_token
    if tok.eos_token_id is None:
        raise DependencyError(
            f"the tokenizer at {str(path)!r} has no eos token: generation could never stop",
            hint="set eos_token in its tokenizer_config.json",
        )
    return tok


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of a rendered prompt and, per media slot group, the positions it fills."""

    ids: list[int]
    slots: list[list[int]]  # one list of k positions per placeholder, in prompt order


class PromptFormat:
    """Renders prompts and responses to ids; media placeholders become slot positions."""

    def __init__(self, tokenizer: Any, tokens_per_medium: int) -> None:
        self.tokenizer = tokenizer
        self.k = tokens_per_medium
        self.pad_id: int = tokenizer.pad_token_id
        self.eos_id: int = tokenizer.eos_token_id

    def render(self, prompt: str) -> str:
        """The user turn as text, ready for the assistant's answer.

        >>> tok = train_tokenizer(["x y"] * 5, 300)
        >>> PromptFormat(tok, 1).render("Hi")
        '<s><|user|>\\nHi\\n<|assistant|>\\n'
        """
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text: str = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            return text
        bos = tok.bos_token or ""
        return bos + FALLBACK_LAYOUT.format(prompt=prompt)

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def encode_prompt(self, prompt: str) -> EncodedPrompt:
        """Ids of the rendered ``prompt``; each placeholder becomes ``k`` pad ids (slots)."""
        ids: list[int] = []
        slots: list[list[int]] = []
        for piece in PLACEHOLDER_RE.split(self.render(prompt)):
            if PLACEHOLDER_RE.fullmatch(piece):
                slots.append(list(range(len(ids), len(ids) + self.k)))
                ids.extend([self.pad_id] * self.k)
            elif piece:
                ids.extend(self._ids(piece))
        return EncodedPrompt(ids, slots)

    def encode_response(self, response: str) -> list[int]:
        """Ids of the answer followed by eos (what the loss is computed on)."""
        return [*self._ids(response), self.eos_id]

    def decode(self, ids: list[int]) -> str:
        """Generated ids back to text (special tokens dropped, stripped)."""
        text: str = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text.strip()
