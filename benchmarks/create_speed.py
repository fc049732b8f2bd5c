"""Pretraining-data creation, side by side: ``bertkit data create`` vs Google's create_pretraining_data.py.

    python benchmarks/create_speed.py --input 'DIR/*.txt' [--workers 1,2] [--dupe-factor 10]
                                      [--whole-word-mask] [--google-bert DIR] [--output DIR]

The input is Google's format (one sentence per line, a blank line between documents); make it from
../shared/corpus with ``bertkit data sentences``. Each run is a child process; the parent samples the
resident memory of the child's whole process tree every 0.2 s and prints, per run: wall seconds,
instances/s, input MB/s, and peak RSS (the largest process, the sum over the tree, and the sum of
anonymous memory, i.e. without the file pages of memory-mapped data, which the kernel can drop).

--google-bert DIR names a folder holding Google's create_pretraining_data.py and tokenization.py
(github.com/google-research/bert, commit eedf5716; not part of bertkit). They run unmodified, with
TensorFlow replaced by stubs: absl flags for tf.flags, open/glob for tf.gfile, no-op logging, and
tf.train.Example / TFRecordWriter serialized by bertkit.data.tfrecord (faster than TensorFlow's
protobuf, so Google's time is if anything underestimated).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOCAB = REPO.parent / "shared" / "golden" / "google" / "dev" / "model" / "vocab.txt"


# ----------------------------------------------------------------------------- the runs (child side)


def run_bertkit(args: argparse.Namespace) -> dict:
    from bertkit.data.create import CreateConfig, create_pretraining_data

    config = CreateConfig(max_seq_length=args.max_seq_length, max_predictions_per_seq=args.max_predictions,
                          dupe_factor=args.dupe_factor, whole_word_mask=args.whole_word_mask, seed=args.seed)
    start = time.perf_counter()
    manifest = create_pretraining_data(args.input, args.vocab, args.output, config, lower_case=True,
                                       workers=args.workers, overwrite=True)
    return {"instances": manifest["num_instances"], "seconds": time.perf_counter() - start,
            "bytes": manifest["input"]["bytes"]}


def _tensorflow_stub() -> types.ModuleType:
    from absl import flags

    from bertkit.data.tfrecord import RecordWriter, encode_example

    class Values:  # Int64List, FloatList
        def __init__(self, value: list) -> None:
            self.value = list(value)

    class Feature:
        def __init__(self, int64_list: Values | None = None, float_list: Values | None = None) -> None:
            self.int64_list, self.float_list = int64_list or Values([]), float_list or Values([])
            self.array = (np.array(self.int64_list.value, np.int64) if int64_list is not None
                          else np.array(self.float_list.value, np.float32))

    class Example:
        def __init__(self, features: types.SimpleNamespace) -> None:
            self.features = features

        def SerializeToString(self) -> bytes:  # noqa: N802 - TensorFlow's name
            return encode_example({name: f.array for name, f in self.features.feature.items()})

    class TFRecordWriter(RecordWriter):
        pass

    import glob

    tf = types.ModuleType("tensorflow")
    tf.flags = flags
    tf.gfile = types.SimpleNamespace(GFile=open, Glob=glob.glob)
    tf.logging = types.SimpleNamespace(info=lambda *a, **k: None, set_verbosity=lambda *a: None, INFO=20)
    tf.python_io = types.SimpleNamespace(TFRecordWriter=TFRecordWriter)
    tf.train = types.SimpleNamespace(Example=Example, Features=lambda feature: types.SimpleNamespace(feature=feature),
                                     Feature=Feature, Int64List=Values, FloatList=Values)
    return tf


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_google(args: argparse.Namespace) -> dict:
    sys.modules["tensorflow"] = _tensorflow_stub()
    sys.modules["six"] = types.SimpleNamespace(PY2=False, PY3=True)
    tokenization = _load("tokenization", Path(args.google_bert) / "tokenization.py")
    google = _load("create_pretraining_data", Path(args.google_bert) / "create_pretraining_data.py")
    google.FLAGS(["create_pretraining_data", f"--do_whole_word_mask={args.whole_word_mask}"])
    files = sorted(__import__("glob").glob(args.input))
    start = time.perf_counter()
    tokenizer = tokenization.FullTokenizer(vocab_file=str(args.vocab), do_lower_case=True)
    instances = google.create_training_instances(files, tokenizer, args.max_seq_length, args.dupe_factor, 0.1, 0.15,
                                                 args.max_predictions, random.Random(args.seed))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    google.write_instance_to_example_files(instances, tokenizer, args.max_seq_length, args.max_predictions,
                                           [str(Path(args.output) / "google.tfrecord")])
    return {"instances": len(instances), "seconds": time.perf_counter() - start,
            "bytes": sum(os.path.getsize(f) for f in files)}


# ----------------------------------------------------------------------------- measuring (parent side)


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        out.append(stack.pop())
        stack += children.get(out[-1], [])
    return out


def _memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process in kB; zeros if it is gone."""
    values = {"VmRSS:": 0, "RssAnon:": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in values:
                values[key] = int(line.split()[1])
    except OSError:
        pass
    return values["VmRSS:"], values["RssAnon:"]


def measure(argv: list[str]) -> dict:
    """Run this script as a child with ``argv``; its JSON result plus the peak memory of its tree (MB)."""
    child = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    largest = total = anonymous = 0
    while child.poll() is None:
        sizes = [_memory_kb(pid) for pid in _tree(child.pid)]
        largest = max(largest, max((r for r, _ in sizes), default=0))
        total, anonymous = max(total, sum(r for r, _ in sizes)), max(anonymous, sum(a for _, a in sizes))
        time.sleep(0.2)
    if child.returncode:
        raise SystemExit(f"run failed: {' '.join(argv)}")
    result = json.loads(child.stdout.read().strip().splitlines()[-1])
    return {**result, "rss_largest_mb": largest / 1024, "rss_tree_mb": total / 1024, "rss_anon_mb": anonymous / 1024}


def _row(name: str, r: dict) -> str:
    s = r["seconds"]
    return (f"| {name} | {s:.1f} | {r['instances']:,} | {r['instances'] / s:,.0f} | {r['bytes'] / s / 1e6:.2f} | "
            f"{r['rss_largest_mb']:.0f} | {r['rss_tree_mb']:.0f} | {r['rss_anon_mb']:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input", required=True, help="glob of input text files (quote it)")
    p.add_argument("--vocab", type=Path, default=VOCAB)
    p.add_argument("--workers", default="1,2", help="bertkit worker counts, comma-separated (default: 1,2)")
    p.add_argument("--dupe-factor", type=int, default=10)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--max-predictions", type=int, default=20)
    p.add_argument("--whole-word-mask", action="store_true")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--google-bert", metavar="DIR", help="folder with Google's create_pretraining_data.py")
    p.add_argument("--output", default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--child", choices=("bertkit", "google"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workers = int(args.workers.split(",")[0])
        print(json.dumps(run_bertkit(args) if args.child == "bertkit" else run_google(args)))
        return
    scratch = Path(args.output or tempfile.mkdtemp(prefix="create_speed."))
    common = ["--input", args.input, "--vocab", str(args.vocab), "--dupe-factor", str(args.dupe_factor),
              "--max-seq-length", str(args.max_seq_length), "--max-predictions", str(args.max_predictions),
              "--seed", str(args.seed)] + (["--whole-word-mask"] if args.whole_word_mask else [])
    print("| run | seconds | instances | instances/s | MB/s | peak RSS largest MB | tree MB | anonymous MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for workers in args.workers.split(","):
        out = ["--output", str(scratch / f"bertkit-{workers}"), "--workers", workers]
        print(_row(f"bertkit, {workers} worker(s)", measure([*common, *out, "--child", "bertkit"])), flush=True)
    if args.google_bert:
        out = ["--output", str(scratch / "google"), "--google-bert", args.google_bert]
        print(_row("google", measure([*common, *out, "--child", "google"])), flush=True)


if __name__ == "__main__":
    main()
