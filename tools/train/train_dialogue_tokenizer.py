#!/usr/bin/env python3
"""The dialogue LM's text tokenizer (issue 15): an 800-piece SentencePiece model in which every word
the system says is one piece.

The shipped models/default/tokenizer.model (unigram, 800 pieces, 256 of them byte fallback) splits
"twelve" into 6 pieces (▁ t w e l ve) and "february" into 6: too many for a 12.5 Hz text stream. This
trains a unigram model of the same layout (ids 0-3 = <unk> <s> </s> <pad>, byte fallback, identity
normalisation, dummy prefix) on:
  * every reply of the domain (dialogue_domain.all_replies), repeated (weight --reply-weight);
  * every number word 0-99 alone and in short lists, day and month names, the fixed replies' words;
  * sampled user questions of every intent (sample_turn) and make_corpus's everyday sentences
    (general_sentence / domain_sentence), so ordinary English still tokenises sensibly.
The corpus is a pure function of --seed; SentencePiece runs with one thread and a fixed random seed,
so the model file is the same on every run (checked: sha256 printed).

Then it checks that each domain word (0-19, the tens, the ones after a hyphen as in "forty-two" →
▁forty - two, days, months, every reply word) is ONE piece, and prints pieces per word for the
replies and the questions, new vs old tokenizer.

  python3 tools/train/train_dialogue_tokenizer.py --out out/dialogues      # → out/dialogues/tokenizer.model
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dialogue_domain as dd  # noqa: E402
import make_corpus as mc  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
OLD = os.path.join(REPO, "models", "default", "tokenizer.model")


def corpus_lines(seed: int, reply_weight: int, n_questions: int, n_general: int) -> list[str]:
    r = random.Random(seed)
    lines = []
    replies = dd.all_replies()
    for _ in range(reply_weight):
        lines += replies
    # The three fixed replies are 3 of ~800 distinct replies but said in a quarter of the turns.
    for _ in range(reply_weight * 50):
        lines += [dd.GREETING_REPLY, dd.OOD_REPLY, dd.UNCLEAR_REPLY]
    nums = [mc.spoken(n) for n in range(100)]
    for _ in range(reply_weight):
        lines += [f"{w}." for w in nums] + [f"{w}." for w in mc.DAYS] + [f"{w}." for w in mc.MONTHS]
        lines.append(", ".join(nums[r.randrange(90):][:6]) + ".")
    for _ in range(n_questions):
        lines.append(dd.sample_turn(r, "train").question_text)
    for _ in range(n_general):
        lines.append(mc.general_sentence(r) if r.random() < 0.6 else mc.domain_sentence(r))
    lines += mc.DIALOGUE_ACTS
    return lines


def domain_words() -> list[str]:
    """Words that must each be one piece (as they appear after SentencePiece's pre-split: "forty-two"
    is ▁forty, -, two; so the ones also appear without the ▁ prefix)."""
    words = set()
    for text in dd.all_replies():
        for w in text.split():
            words.update(p for p in w.strip(".,!?").split("-") if p)
    words.update(mc.ONES + [t for t in mc.TENS if t] + mc.DAYS + mc.MONTHS)
    return sorted(words)


def one_piece(sp, word: str) -> bool:
    return len(sp.encode(word)) == 1


def required_pieces() -> list[str]:
    """Pieces the system's words need whole: ▁word for each domain word, the ones bare (after a hyphen)."""
    req = ["\u2581" + w for w in domain_words()] + list(mc.ONES[1:10])
    return sorted(set(req))


def force_pieces(path: str, pb) -> dict:
    """Make every required piece exist and win the Viterbi search: a unigram model trained on so few
    distinct words prefers "▁" + "and" or "▁plu" + "s" (the lone "▁" gets a high probability), so the
    required pieces get the best score of the model's normal pieces (scores are log probabilities < 0:
    one piece at the top score beats any split into two or more pieces), and a required piece the
    training dropped replaces the lowest-scored normal piece of two or more characters that no
    required piece needs. Both SentencePiece (C++) and duplex's Swift reader search with these
    scores, so they agree. Also clears the trainer's input/prefix paths (temporary names) from the
    file, so that the bytes are the same on every run."""
    m = pb.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    normal = pb.ModelProto.SentencePiece.NORMAL
    index = {p.piece: i for i, p in enumerate(m.pieces)}
    top = max(p.score for p in m.pieces if p.type == normal)
    req = required_pieces()
    added, rescored = [], []
    victims = sorted((i for i, p in enumerate(m.pieces)
                      if p.type == normal and len(p.piece) >= 2 and p.piece not in req),
                     key=lambda i: (m.pieces[i].score, m.pieces[i].piece))
    for piece in req:
        if piece not in index:
            i = victims.pop(0)
            del index[m.pieces[i].piece]
            m.pieces[i].piece = piece
            index[piece] = i
            added.append(piece)
        m.pieces[index[piece]].score = top
        rescored.append(piece)
    del m.trainer_spec.input[:]
    m.trainer_spec.input.append("corpus.txt")
    m.trainer_spec.model_prefix = "tokenizer"
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return {"added": added, "rescored": len(rescored), "top_score": top}


def stats(sp, texts: list[str]) -> dict:
    n_words = n_pieces = 0
    worst = (0, "")
    for t in texts:
        for w in t.split():
            k = len(sp.encode(w))
            n_words += 1
            n_pieces += k
            if k > worst[0]:
                worst = (k, w)
    return {"words": n_words, "pieces": n_pieces, "pieces_per_word": round(n_pieces / max(1, n_words), 3),
            "max": worst[0], "max_word": worst[1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder: writes OUT/tokenizer.model (+ .vocab, tokenizer.json)")
    ap.add_argument("--vocab-size", type=int, default=800)
    ap.add_argument("--model-type", default="unigram", choices=["unigram"],
                    help="duplex's Swift SentencePiece reads UNIGRAM models only")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reply-weight", type=int, default=20, help="times each reply is repeated in the corpus")
    ap.add_argument("--questions", type=int, default=20000)
    ap.add_argument("--general", type=int, default=20000)
    ap.add_argument("--old", default=OLD, help="tokenizer to compare with (and copy the layout of)")
    args = ap.parse_args()

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    old_proto = pb.ModelProto()
    with open(args.old, "rb") as f:
        old_proto.ParseFromString(f.read())
    ts = old_proto.trainer_spec
    old = spm.SentencePieceProcessor(model_file=args.old)
    ids = [old.id_to_piece(i) for i in range(4)]
    if ids != ["<unk>", "<s>", "</s>", "<pad>"]:
        print(f"train_dialogue_tokenizer: note: the old tokenizer's ids 0-3 are {ids}", file=sys.stderr)

    lines = corpus_lines(args.seed, args.reply_weight, args.questions, args.general)
    os.makedirs(args.out, exist_ok=True)
    prefix = os.path.join(args.out, "tokenizer")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        spm.set_random_generator_seed(args.seed)
        spm.SentencePieceTrainer.train(
            input=path, model_prefix=prefix, vocab_size=args.vocab_size, model_type=args.model_type,
            character_coverage=1.0, byte_fallback=bool(ts.byte_fallback), normalization_rule_name="identity",
            add_dummy_prefix=True, remove_extra_whitespaces=True, split_digits=bool(ts.split_digits),
            unk_id=0, bos_id=1, eos_id=2, pad_id=3, unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
            pad_piece="<pad>", num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
            max_sentence_length=4096, minloglevel=2)
    fix = force_pieces(prefix + ".model", pb)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert sp.get_piece_size() == args.vocab_size
    dw = domain_words()
    bad = [w for w in dw if not one_piece(sp, w)]
    # The ones as the part after a hyphen: "forty-two" → ▁forty - two (three pieces, one per part).
    hyph = [mc.spoken(n) for n in range(21, 100) if n % 10]
    bad_h = [w for w in hyph if len(sp.encode(w)) != 3]
    replies = dd.all_replies()
    r = random.Random(args.seed + 1)
    questions = [dd.sample_turn(r, "eval").question_text for _ in range(2000)]
    with open(prefix + ".model", "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    report = {"model": prefix + ".model", "sha256": sha, "forced": fix, "model_type": args.model_type, "vocab_size": sp.get_piece_size(),
              "byte_fallback": bool(ts.byte_fallback), "corpus_lines": len(lines), "domain_words": len(dw),
              "domain_words_not_one_piece": bad, "hyphenated_not_three_pieces": bad_h,
              "examples": {w: sp.encode(w, out_type=str) for w in ["twelve", "february", "forty-two.",
                                                                   "seven plus five is twelve.", dd.OOD_REPLY]},
              "old_examples": {w: old.encode(w, out_type=str) for w in ["twelve", "february", "forty-two."]},
              "replies": {"new": stats(sp, replies), "old": stats(old, replies)},
              "questions": {"new": stats(sp, questions), "old": stats(old, questions)},
              "domain_words_pieces": {"new": stats(sp, dw), "old": stats(old, dw)}}
    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report[k] for k in ("model", "sha256", "forced", "domain_words_not_one_piece",
                                             "hyphenated_not_three_pieces", "examples", "old_examples",
                                             "replies", "questions", "domain_words_pieces")}, indent=1))
    if bad or bad_h:
        print("train_dialogue_tokenizer: some domain words are not one piece (raise --reply-weight)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
