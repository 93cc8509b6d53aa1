"""``cotdistill data download``: fill the data directory from the public sources.

Every file is stored gzip-compressed under the data directory's layout (see
:mod:`cotdistill.paths`). Files already present (``X.gz`` or ``X``) are skipped, so the command is
resumable; each file is written atomically (temp file + rename). Offline, the first failing request
is a one-line :class:`~cotdistill.errors.UserError`.

Sources:

* the paper's repository, ``EIT-NLP/Distilling-CoT-Reasoning`` (Apache-2.0): the released SFT files
  (``data/``) and the OpenBookQA / StrategyQA evaluation sets (``Evaluation/reasoning_eval/``);
* ``openai/grade-school-math`` (GSM8K), ``arkilpatel/SVAMP``, ``google-deepmind/AQuA``;
* CommonsenseQA's dev split (``dev_rand_split.jsonl``, 1221 questions, the paper's CSQA test set),
  converted to the paper's ``{"instruction", "label"}`` layout.
"""

from __future__ import annotations

import gzip
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError
from .fileio import atomic_open
from .paths import CACHE_DIR, data_dir as resolve_data_dir
from .progress import Progress, Reporter

PAPER_REPO = "https://raw.githubusercontent.com/EIT-NLP/Distilling-CoT-Reasoning/main"
GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"
SVAMP = "https://raw.githubusercontent.com/arkilpatel/SVAMP/main/SVAMP.json"
AQUA = "https://raw.githubusercontent.com/google-deepmind/AQuA/master"
CSQA_DEV = "https://s3.amazonaws.com/commensenseqa/dev_rand_split.jsonl"

# the released files (names exactly as released in the paper repository's data/ folder)
PAPER_FILES = [
    *(f"0_SVAMP_chatgpt_level{lv}{f}" for lv in (3, 5) for f in ("BSM", "RaR", "SYM")),
    *(f"SVAMP_ChatGPT_level{i}_ranked" for i in range(1, 7)),
    *(f"SVAMP_gemini_level{i}_ranked" for i in range(1, 7)),
    *(f"SVAMP_llama_level{i}_ranked" for i in range(1, 5)),
    "SVAMP_only_ans", "svamp_human_annotation",
    "aqua_human", "aqua_only_ans", "commonsenseQA_onlyans", "dataset_info",
    "gsm8k_gemini_level1_ranked", "gsm8k_gemini_level2_ranked", "gsm8k_llama_level1_ranked",
    "gsm8k_llama_level2_ranked", "gsm_train_onlyans", "math_human",
    *(f"obqa_{t}_level{i}_ranked" for t in ("gemini", "llama") for i in range(1, 7)),
    "openbookQA_ChatGPT_0_shot_with_gt_ranked", "openbookQA_ChatGPT_0_shot_without_gt_ranked",
    *(f"openbookQA_chatgpt_level_{i}_ranked" for i in range(1, 7)),
    "openbookQA_onlyans", "openbookqa_chatgpt_bsm_level3_ranked", "openbookqa_chatgpt_rar_level3_ranked",
    *(f"stqa_{t}_level{i}_ranked" for t in ("gemini", "llama") for i in range(1, 7)),
    "stqa_human_annotation",
    *(f"strategyQA_chatgpt_level_{i}_ranked" for i in range(1, 7)),
    "strategyQA_onlyans",
]


def _csqa_convert(raw: bytes) -> bytes:
    """CommonsenseQA dev JSONL -> the paper's CSQA test layout ``{"instruction", "output", "label"}``."""
    rows = []
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        q = r["question"]
        opts = "".join(f"{c['label']}. {c['text']}\n" for c in q["choices"])
        rows.append({"instruction": f"{q['stem']} Answer Choices:\n{opts}", "output": "", "label": r["answerKey"]})
    return json.dumps(rows, ensure_ascii=False).encode("utf-8")


def sources() -> list[tuple[str, str, str, Callable[[bytes], bytes] | None]]:
    """``(group, relative path, url, convert)`` for every file the data directory can hold."""
    out: list[tuple[str, str, str, Callable[[bytes], bytes] | None]] = [
        ("benchmarks", "benchmarks/gsm8k/train.jsonl.gz", f"{GSM8K}/train.jsonl", None),
        ("benchmarks", "benchmarks/gsm8k/test.jsonl.gz", f"{GSM8K}/test.jsonl", None),
        ("benchmarks", "benchmarks/svamp/SVAMP.json.gz", SVAMP, None),
        ("benchmarks", "benchmarks/aqua/test.json.gz", f"{AQUA}/test.json", None),
        ("benchmarks", "benchmarks/aqua/dev.json.gz", f"{AQUA}/dev.json", None),
        ("benchmarks", "benchmarks/csqa_test.json.gz", CSQA_DEV, _csqa_convert),
        ("benchmarks", "benchmarks/openbookQA_test.json.gz", f"{PAPER_REPO}/Evaluation/reasoning_eval/openbookQA_test.json", None),
        ("benchmarks", "benchmarks/strategyQA_test.json.gz", f"{PAPER_REPO}/Evaluation/reasoning_eval/strategyQA_test.json", None),
    ]
    out += [("paper", f"paper/{n}.json.gz", f"{PAPER_REPO}/data/{n}.json", None) for n in PAPER_FILES]
    return out


def _fetch(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "cotdistill-data-download"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as e:
        raise UserError(f"download of {url} failed: HTTP {e.code}; check the URL or fetch the file by hand") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(
            f"cannot download {url} ({reason}); are you offline? Copy the files by hand into the data "
            f"directory or point --data-dir / $COTDISTILL_DATA at a directory that has them"
        ) from None


def download_all(
    data_dir: str | os.PathLike | None = None,
    *,
    groups: list[str] | None = None,
    dry_run: bool = False,
    timeout: float = 30.0,
    progress: Progress = True,
    say: Callable[[str], None] | None = None,
    console: Any = None,
) -> list[Path]:
    """Download every missing file of ``groups`` (``benchmarks``, ``paper``; default both). Returns new
    files. ``say`` receives one line per file (skipped, fetched, would fetch; default: printed, or
    ``console.print``); ``progress`` reports the files done (:class:`cotdistill.progress.Reporter`)."""
    if say is None:
        say = ((lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True)) if console is not None
               else (lambda m: print(m, flush=True)))
    root = Path(resolve_data_dir(data_dir))
    known = {"benchmarks", "paper"}
    groups = [g.lower() for g in groups] if groups else sorted(known)
    bad = [g for g in groups if g not in known]
    if bad:
        raise UserError(f"unknown data group {bad[0]!r}; choose from benchmarks, paper")
    todo = []
    for group, rel, url, conv in sources():
        if group not in groups:
            continue
        p = root / rel
        if p.exists() or p.with_suffix("").exists():
            say(f"skip   {rel} (present)")
            continue
        todo.append((rel, url, conv))
    if dry_run:
        for rel, url, _ in todo:
            say(f"would fetch {url} -> {root / rel}")
        return []
    written = []
    with Reporter(progress if todo else False, "download", "", len(todo), unit="files", console=console) as rep:
        for rel, url, conv in todo:
            say(f"fetch  {url} -> {root / rel}")
            data = _fetch(url, timeout)
            if conv is not None:
                data = conv(data)
            p = root / rel
            with atomic_open(p, "wb") as f:
                with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
                    gz.write(data)
            written.append(p)
            rep.update(advance=1, file=rel)
    say(f"{len(written)} file(s) downloaded into {root}" + (" (the default cache)" if root == CACHE_DIR else ""))
    return written


__all__ = ["download_all", "sources", "PAPER_FILES"]
