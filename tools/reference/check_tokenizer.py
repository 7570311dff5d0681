#!/usr/bin/env python3
"""Compares duplex's SentencePiece tokenizer with the `sentencepiece` library on any model and text:
every line of the text files is encoded by both, and the ids' decodes are compared too.

Usage:  "$(tools/reference/setup_venv.sh)" tools/reference/check_tokenizer.py \
            --model tokenizer_spm_32k_3.model --text some.txt [more.txt ...] [--duplex PATH]

Lines are split at b"\\n" only, the empty tail after a final newline dropped (as `duplex tokenize
--lines` does). Exits 1 when anything differs, after printing the first differences.
"""
import argparse
import json
import os
import subprocess
import sys

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--text", required=True, nargs="+")
    built = [os.path.join(ROOT, ".build", c, "duplex") for c in ("release", "debug")]
    parser.add_argument("--duplex", default=next((b for b in built if os.path.exists(b)), built[-1]),
                        help="the duplex binary (default: the release build, else the debug build)")
    parser.add_argument("--show", type=int, default=5, help="differences to print")
    args = parser.parse_args()

    sp = spm.SentencePieceProcessor(model_file=args.model)
    total = bad_ids = bad_text = 0
    for path in args.text:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        out = subprocess.run([args.duplex, "tokenize", "--tokenizer", args.model, "--lines", path],
                             check=True, capture_output=True).stdout.decode("utf-8").splitlines()
        assert len(out) == len(lines), f"{path}: {len(lines)} lines, duplex answered {len(out)}"
        for raw, answer in zip(lines, out):
            text = raw.decode("utf-8")
            got = json.loads(answer)
            ids = sp.encode(text)
            total += 1
            if got["ids"] != ids:
                bad_ids += 1
                if bad_ids <= args.show:
                    print(f"ids differ for {text!r}:\n  duplex  {got['ids']}\n  library {ids}\n"
                          f"  library pieces {sp.encode(text, out_type=str)}")
            decoded = sp.decode(got["ids"])
            if got["decoded"] != decoded:
                bad_text += 1
                if bad_text <= args.show:
                    print(f"decode differs for {got['ids']}:\n  duplex  {got['decoded']!r}\n  library {decoded!r}")
    print(f"{args.model}: {total} lines, {total - bad_ids} identical ids, {total - bad_text} identical decodes "
          f"(sentencepiece {spm.__version__})")
    sys.exit(1 if bad_ids or bad_text else 0)


if __name__ == "__main__":
    main()
