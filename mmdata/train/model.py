"""The model: a projector per feature kind feeding a causal LM that carries LoRA adapters.

:class:`MultimodalLM` embeds the prompt's tokens with the LM's own embedding table, then
overwrites each media slot's ``k`` positions with its projector's output (standardize with
train-split statistics → LayerNorm → Linear → GELU → Linear to ``k × hidden``: the raw
features differ in scale by orders of magnitude between modalities and between dimensions).
A masked or missing medium gets its source's *missing* embedding instead — learned
(``train.missing: learned``) or zeros — the same in training and evaluation, so "trained on
one modality alone" means the other sources are always their missing embedding.

The LM is either

* the **built-in** model (``train.base_model: null``): a small ``LlamaForCausalLM`` built
  from :class:`~mmdata.config.BuiltinModelConfig` with the dataset-trained tokenizer. Its
  base weights are random, so besides LoRA on the attention/MLP projections its
  ``embed_tokens`` and ``lm_head`` are trained fully (peft ``modules_to_save``): frozen random
  embeddings and output head would leave a random vocabulary that low-rank updates inside
  the layers can only partly work around, and the model would learn far slower;
* a **pretrained** Hugging Face causal LM (``--base-model PATH_OR_ID``): LoRA only by
  default (``train.lora.modules_to_save`` overrides), optionally loaded in 4 bit (QLoRA) on a
  CUDA GPU with bitsandbytes.

>>> import torch
>>> p = Projector(3, d_model=8, k=2, hidden=4, mean=torch.zeros(3), std=torch.ones(3))
>>> p(torch.randn(5, 3)).shape
torch.Size([5, 2, 8])
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmdata.config import TrainConfig
from mmdata.errors import ConfigError, DependencyError, StageError
from mmdata.train.data import MODALITIES, Batch

_SRC = "pipeline config"
BUILTIN_MODULES_TO_SAVE = ("embed_tokens", "lm_head")


# -- device and precision ----------------------------------------------------------------
def resolve_device(device: str) -> torch.device:
    """:func:`mmdata.features.encoders.resolve_device` for ``train.device``.

    >>> resolve_device("cpu").type
    'cpu'
    """
    from mmdata.features.encoders import resolve_device as resolve

    return resolve(device, "train.device")


def use_bf16(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast: on CUDA when ``train.bf16`` (never on CPU)."""
    return cfg.bf16 and device.type == "cuda"


def autocast(cfg: TrainConfig, device: torch.device) -> Any:
    """The autocast context of a forward pass (a no-op on CPU: the same code path)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg, device))


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_threads(cfg: TrainConfig) -> int:
    """Torch CPU threads: ``train.threads``, else 1 for the built-in model (its matrices are too
    small to gain from more, and extra threads spin when another process is busy), else every
    usable CPU.

    >>> cpu_threads(TrainConfig())
    1
    """
    if cfg.threads is not None:
        return cfg.threads
    return 1 if cfg.base_model is None else usable_cpus()


@contextmanager
def torch_settings(cfg: TrainConfig, device: torch.device) -> Iterator[None]:
    """Threads and deterministic algorithms for a training or evaluation, restored after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(cpu_threads(cfg))
    if device.type == "cuda":  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@contextmanager
def quiet_hf() -> Iterator[None]:
    """No tqdm bars or deprecation chatter from transformers/peft (the stage draws its own)."""
    import warnings

    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def check_quantize(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse QLoRA (``train.quantize: 4bit``) cleanly where it cannot run.

    >>> check_quantize(TrainConfig(), torch.device("cpu"))  # 'none': nothing to check
    """
    if cfg.quantize == "none":
        return
    if cfg.base_model is None:
        allowed = "'none' with the built-in model (QLoRA quantizes a pretrained base_model)"
        raise ConfigError(_SRC, "train.quantize", cfg.quantize, allowed)
    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (not installed)")
    if device.type != "cuda":
        missing.append(f"a CUDA GPU (the trainer runs on {device.type})")
    if missing:
        raise DependencyError(
            "train.quantize: 4bit (QLoRA, a 4-bit base model) needs " + " and ".join(missing),
            hint="on a machine with an NVIDIA GPU: pip install bitsandbytes and use "
            "--device cuda; or set train.quantize: none (LoRA on the full-precision model)",
        )


# -- the language model --------------------------------------------------------------------
def resolve_base_model(source: str, revision: str | None) -> Path:
    """A local model folder, or a hub id resolved to its snapshot (HF cache only when
    ``HF_HUB_OFFLINE=1``).

    >>> resolve_base_model("/nonexistent/model", None)  # doctest: +SKIP
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return Path(
            snapshot_download(
                source,
                revision=revision,
                local_files_only=offline,
                allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"],
            )
        )
    except Exception as err:  # huggingface_hub raises many kinds
        raise DependencyError(
            f"train.base_model {source!r} is not a local folder and could not be resolved as a "
            f"Hugging Face model: {type(err).__name__}: {str(err)[:200]}",
            hint="give a local model folder (save_pretrained), or unset HF_HUB_OFFLINE to "
            "allow a download"
            if offline
            else "give a local model folder or a valid hub id",
        ) from err


def builtin_lm(cfg: TrainConfig, tokenizer: Any, seed: int) -> Any:
    """The small Llama of ``train.model``, random weights from ``seed``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    m = cfg.model
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.heads,
        max_position_embeddings=cfg.max_length + cfg.eval.max_new_tokens,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def load_lm(path: Path, cfg: TrainConfig, device: torch.device) -> Any:
    """A causal LM from a local folder (safetensors only), on ``device``."""
    from transformers import AutoModelForCausalLM

    if not sorted(path.glob("*.safetensors")):
        raise DependencyError(
            f"model folder {str(path)!r} has no safetensors weights; mmdata never loads "
            "pickle checkpoints (*.bin, *.pt)",
            hint="re-save the model with save_pretrained(path) (safetensors is the default)",
        )
    kwargs: dict[str, Any] = {"dtype": torch.float32, "use_safetensors": True}
    if cfg.base_model is not None and use_bf16(cfg, device):
        kwargs["dtype"] = torch.bfloat16
    if cfg.quantize == "4bit":
        check_quantize(cfg, device)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": device.index or 0}
    try:
        lm: Any = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **kwargs)
    except Exception as err:  # transformers raises many kinds
        raise DependencyError(
            f"cannot load a causal LM from {str(path)!r}: {type(err).__name__}: {err}"[:500],
            hint="give a folder written by save_pretrained of a *ForCausalLM model",
        ) from err
    if cfg.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(lm, use_gradient_checkpointing=False)
    return lm.to(device)


def with_lora(lm: Any, cfg: TrainConfig, builtin: bool) -> Any:
    """``lm`` wrapped with LoRA adapters (peft); the base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    save = cfg.lora.modules_to_save
    if save is None:
        save = list(BUILTIN_MODULES_TO_SAVE) if builtin else []
    lcfg = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=list(cfg.lora.target_modules),
        modules_to_save=list(save) or None,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(lm, lcfg)
    except ValueError as err:  # no module matches target_modules / modules_to_save
        names = sorted({n.rsplit(".", 1)[-1] for n, _ in lm.named_modules() if n})
        allowed = f"names of linear layers of this model ({', '.join(names[:20])}): {err}"
        raise ConfigError(
            _SRC, "train.lora.target_modules", list(cfg.lora.target_modules), allowed[:600]
        ) from err


# -- projectors and the multimodal wrapper ---------------------------------------------------
class Projector(nn.Module):
    """Features of one kind → ``k`` LM input embeddings."""

    def __init__(
        self, in_dim: int, d_model: int, k: int, hidden: int, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        super().__init__()
        self.k, self.d_model = k, d_model
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, k * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[n, in_dim]`` → ``[n, k, d_model]``."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        x = self.norm((x.float() - mean) / std)
        out: torch.Tensor = self.fc2(self.act(self.fc1(x)))
        return out.view(-1, self.k, self.d_model)


class MultimodalLM(nn.Module):
    """Projectors + missing embeddings + the (LoRA-wrapped) causal LM."""

    def __init__(
        self,
        lm: Any,
        dims: dict[str, int],
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
        cfg: TrainConfig,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.cfg = cfg
        d_model = int(lm.get_input_embeddings().weight.shape[1])
        k = cfg.tokens_per_medium
        self.k = k
        self.projectors = nn.ModuleDict(
            {
                kind: Projector(dims[kind], d_model, k, cfg.projector_hidden, *stats[kind])
                for kind in sorted(dims)
            }
        )
        self.missing = nn.Parameter(
            torch.zeros(len(MODALITIES), k, d_model), requires_grad=cfg.missing == "learned"
        )
        forward = inspect.signature(lm.get_base_model().forward).parameters
        self._cache_kw = "cache" if "cache" in forward else "past_key_values"

    # -- state ---------------------------------------------------------------------------
    def trainable_names(self) -> list[str]:
        """Names of everything a checkpoint holds: trainable parameters and the projectors'
        feature statistics (buffers)."""
        names = [n for n, p in self.named_parameters() if p.requires_grad]
        names += [n for n, _ in self.named_buffers() if n.startswith("projectors.")]
        return sorted(names)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Trainable tensors by name, detached float copies on the CPU."""
        state = dict(self.named_parameters()) | dict(self.named_buffers())
        return {
            n: state[n].detach().to("cpu", copy=True).contiguous() for n in self.trainable_names()
        }

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load a :meth:`trainable_state`; every name must match exactly."""
        expected = set(self.trainable_names())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise StageError(
                f"checkpoint does not fit the model: missing {missing[:3]}, unexpected {extra[:3]}",
                hint="the config changed since it was written; train again (--force)",
            )
        state = dict(self.named_parameters()) | dict(self.named_buffers())
        with torch.no_grad():
            for n, t in tensors.items():
                state[n].copy_(t)

    def parameter_groups(self) -> tuple[list[tuple[str, nn.Parameter]], ...]:
        """Trainable parameters by name in a fixed order: ``(LM, projectors + missing)``."""
        named = sorted((n, p) for n, p in self.named_parameters() if p.requires_grad)
        is_proj = [n.startswith("projectors.") or n == "missing" for n, _ in named]
        lm = [x for x, pj in zip(named, is_proj, strict=True) if not pj]
        return lm, [x for x, pj in zip(named, is_proj, strict=True) if pj]

    # -- forward -------------------------------------------------------------------------
    def slot_mask(
        self,
        batch: Batch,
        masked: frozenset[str] = frozenset(),
        dropout: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Slots that read the missing embedding: no features, a masked source, or (training)
        modality dropout drawn per (sample, source) from ``generator``."""
        out = batch.slot_missing.clone()
        for i, source in enumerate(MODALITIES):
            if source in masked:
                out |= batch.slot_source == i
        if dropout > 0 and len(out):
            n_b = int(batch.input_ids.shape[0])
            draw = torch.rand(n_b, len(MODALITIES), generator=generator) < dropout
            out |= draw.to(out.device)[batch.slot_batch, batch.slot_source]
        return out

    def embed(self, batch: Batch, slot_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings with every media slot's ``k`` positions filled."""
        emb: torch.Tensor = self.lm.get_input_embeddings()(batch.input_ids)
        n = int(batch.slot_pos.shape[0])
        if n == 0:
            return emb
        missing = self.missing[batch.slot_source].to(emb.dtype)  # [S, k, d]
        tokens = missing
        for kind, idx in batch.kind_slots.items():
            if kind in self.projectors:
                proj = self.projectors[kind](batch.kind_feats[kind]).to(emb.dtype)
                tokens = tokens.index_copy(0, idx, proj)
        tokens = torch.where(slot_mask.view(-1, 1, 1), missing, tokens)
        offsets = torch.arange(self.k, device=emb.device)
        rows = batch.slot_batch.view(-1, 1).expand(-1, self.k).reshape(-1)
        cols = (batch.slot_pos.view(-1, 1) + offsets).reshape(-1)
        return emb.index_put((rows, cols), tokens.reshape(rows.shape[0], -1))

    def loss(self, batch: Batch, slot_mask: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy over the response tokens (divide by :attr:`Batch.n_targets`)."""
        r = int(batch.targets.shape[1])
        out = self.lm(
            inputs_embeds=self.embed(batch, slot_mask),
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
            logits_to_keep=r + 1,
        )
        logits = out.logits[:, :-1].float()  # position t predicts token t + 1
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            batch.targets.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )

    @torch.no_grad()
    def generate(
        self, batch: Batch, slot_mask: torch.Tensor, max_new_tokens: int, eos_id: int
    ) -> list[list[int]]:
        """Greedy decoding with the KV cache; each sequence stops at eos (not included)."""
        embeds = self.embed(batch, slot_mask)
        mask = batch.attention_mask
        pos = batch.position_ids[:, -1:]
        out = self.lm(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=batch.position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        n_b = int(embeds.shape[0])
        done = torch.zeros(n_b, dtype=torch.bool, device=embeds.device)
        seqs: list[list[int]] = [[] for _ in range(n_b)]
        table = self.lm.get_input_embeddings()
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].float().argmax(dim=-1)
            for b in torch.nonzero(~done & (nxt != eos_id)).flatten().tolist():
                seqs[b].append(int(nxt[b]))
            done |= nxt == eos_id
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            cache = out.cache if self._cache_kw == "cache" else out.past_key_values
            out = self.lm(
                inputs_embeds=table(nxt.view(-1, 1)),
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{self._cache_kw: cache},
            )
        return seqs
