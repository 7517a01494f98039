#!/usr/bin/env python3
"""Make the Gemma 3 tokenizer reference fixture for models/tests/tokenizer_reference.rs.

What it writes
    models/tests/fixtures/gemma3_tokenizer_reference.json: a list of {"text", "ids"}. "ids" are
    the token ids of "text" WITHOUT a leading BOS, with control-token spellings such as
    "<start_of_turn>" in the text parsed as their control ids (what a chat template needs).
    The Rust test needs no Python: it only reads this file and the GGUF.

Why independent references
    The Rust tokenizer (models/src/tokenizer.rs) rebuilds SentencePiece BPE out of a Hugging Face
    BPE model with merges derived from the GGUF scores. To catch a wrong derivation the ids here
    come from implementations that do not share that code path:
      * "sentencepiece": Google's C++ SentencePiece, fed a ModelProto rebuilt from the GGUF vocab
        (BPE, byte fallback, identity normalizer, no dummy prefix, whitespace runs as
        user-defined pieces spelled with U+2581). SentencePiece never parses control tokens from
        text, so the text is cut at control-token spellings first, as llama.cpp does.
        This is the reference that gets written.
      * "transformers": transformers' own GGUF -> tokenizer conversion for Gemma (its merges use a
        different tie rule and its whitespace runs go through BPE, not added tokens).
      * "llama.cpp": llama-cpp-python with vocab_only=True, if it is installed.
    Every reference that is available must agree on every string, or the script fails and
    writes nothing -- except for KNOWN_DIVERGENCES below, which are reported but allowed.

Usage (from the workspace root; only needed when the model or the strings change)
    .venv/bin/pip install gguf sentencepiece protobuf transformers   # + llama-cpp-python, optional
    .venv/bin/python scripts/make_tokenizer_fixtures.py [--gguf models-data/gemma-3-270m-q4_k_m.gguf]
"""

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GGUF = ROOT / "models-data" / "gemma-3-270m-q4_k_m.gguf"
OUT = ROOT / "models" / "tests" / "fixtures" / "gemma3_tokenizer_reference.json"

# GGUF / llama.cpp token types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces",
    "trailing spaces   ",
    "double  space and triple   space",
    " ",
    "",
    "x" + " " * 40 + "y",  # longer than the longest whitespace-run piece (31 spaces)
    "line1\nline2\n\n\nline5\n",
    "\n\n\t  mixed\t\twhitespace \t\n",
    "\t\tindented with tabs\n\t\t\tand more",
    "a\r\nb\r\n",
    "日本語のテキストと中文文本",
    "Emoji: 😀🎉👍🏽 and flags 🇫🇷",
    "Café naïve résumé Straße Ångström",
    "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم",
    "हिन्दी और বাংলা",
    "def main():\n    for i in range(10):\n        print(f\"{i:02d}\")\n    return 0\n",
    '{"key": [1, 2, 3], "nested": {"a": null}}',
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "Numbers: 3.14159, 1,000,000 and 2025-01-31 12:34:56",
    "Visit https://example.com/path?q=tokenizer&lang=en#section for details.",
    "I'm sure they're fine, aren't they? aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    # Characters missing from the vocab: must become <0xXX> byte pieces.
    "bell\x07 line\u2028sep 𠀋 \U0001FAE8",
    # Literal spellings of byte/control/user-defined pieces.
    "<0x41> <unk> <table>cell</table> [multimodal]",
]


# (reference, predicate on the text, why its ids may legitimately differ from SentencePiece's).
KNOWN_DIVERGENCES = [
    ("transformers", lambda text: " " * 32 in text,
     "transformers builds whitespace runs from merges, so a run longer than the longest run piece "
     "(31 spaces) splits by merge rank (e.g. 16+24) instead of longest-match-first (31+9) as "
     "SentencePiece and llama.cpp do"),
]


def read_vocab(gguf_path):
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def get(key):
        return fields[key].contents()

    return {
        "tokens": get("tokenizer.ggml.tokens"),
        "scores": [float(s) for s in get("tokenizer.ggml.scores")],
        "token_type": [int(t) for t in get("tokenizer.ggml.token_type")],
        "bos": int(get("tokenizer.ggml.bos_token_id")),
        "eos": int(get("tokenizer.ggml.eos_token_id")),
        "unk": int(get("tokenizer.ggml.unknown_token_id")),
        "pad": int(get("tokenizer.ggml.padding_token_id")),
        "add_space_prefix": bool(get("tokenizer.ggml.add_space_prefix")),
    }


def control_splitter(vocab):
    """Cuts text at control-token spellings (longest first), yielding (is_control, piece)."""
    controls = [t for t, ty in zip(vocab["tokens"], vocab["token_type"]) if ty in (CONTROL, UNKNOWN)]
    pattern = re.compile("|".join(re.escape(t) for t in sorted(controls, key=len, reverse=True)))

    def split(text):
        pos = 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                yield False, text[pos : m.start()]
            yield True, m.group(0)
            pos = m.end()
        if pos < len(text):
            yield False, text[pos:]

    return split


def sentencepiece_reference(vocab):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    assert not vocab["add_space_prefix"], "this builder assumes Gemma's no-dummy-prefix setup"
    m = pb.ModelProto()
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.byte_fallback = True
    ts.vocab_size = len(vocab["tokens"])
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = vocab["unk"], vocab["bos"], vocab["eos"], vocab["pad"]
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = False
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    kinds = {NORMAL: pb.ModelProto.SentencePiece.NORMAL, CONTROL: pb.ModelProto.SentencePiece.CONTROL,
             UNKNOWN: pb.ModelProto.SentencePiece.UNKNOWN, USER_DEFINED: pb.ModelProto.SentencePiece.USER_DEFINED,
             UNUSED: pb.ModelProto.SentencePiece.UNUSED, BYTE: pb.ModelProto.SentencePiece.BYTE}
    for i, (tok, score, ty) in enumerate(zip(vocab["tokens"], vocab["scores"], vocab["token_type"])):
        p = m.pieces.add()
        # llama.cpp's converter stores whitespace-run pieces with real spaces; SentencePiece
        # matches user-defined pieces after spaces became U+2581, so spell them that way.
        p.piece = tok.replace(" ", "\u2581") if ty == USER_DEFINED else tok
        p.score = score if ty == NORMAL else 0.0
        # SentencePiece wants exactly one UNKNOWN piece; GGUF marks Gemma's <unk> as control.
        p.type = pb.ModelProto.SentencePiece.UNKNOWN if i == vocab["unk"] else kinds[ty]
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    split = control_splitter(vocab)

    def encode(text):
        ids = []
        for is_control, piece in split(text):
            ids.extend([sp.piece_to_id(piece)] if is_control else sp.encode(piece))
        return ids

    return encode


def transformers_reference(vocab):
    # Calls transformers' GGUF tokenizer builders directly: its GGUF file reader imports torch.
    from transformers.integrations.gguf.gguf_tokenizer_mapping import add_gguf_special_tokens, gemma_tokenizer

    tdict = {"tokenizer_type": "llama", "tokens": vocab["tokens"], "scores": vocab["scores"],
             "token_type": vocab["token_type"]}
    tok = add_gguf_special_tokens(gemma_tokenizer(tdict), tdict)
    return lambda text: tok.encode(text, add_special_tokens=False)


def llama_cpp_reference(gguf_path):
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    return lambda text: llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def load_references(vocab, gguf_path):
    refs = {"sentencepiece": sentencepiece_reference(vocab)}
    for name, make in [("transformers", lambda: transformers_reference(vocab)),
                       ("llama.cpp", lambda: llama_cpp_reference(gguf_path))]:
        try:
            refs[name] = make()
        except ImportError as e:
            print(f"note: {name} reference unavailable ({e}); skipping it", file=sys.stderr)
    return refs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    vocab = read_vocab(args.gguf)
    refs = load_references(vocab, args.gguf)
    fixtures, disagreements = [], 0
    for text in TEXTS:
        results = {name: list(map(int, enc(text))) for name, enc in refs.items()}
        ids = results["sentencepiece"]
        for name, other in results.items():
            if other == ids:
                continue
            known = [why for ref, applies, why in KNOWN_DIVERGENCES if ref == name and applies(text)]
            print(f"{'known divergence' if known else 'MISMATCH'} {name} vs sentencepiece on {text!r}:"
                  f"\n  {other}\n  {ids}" + (f"\n  ({known[0]})" if known else ""), file=sys.stderr)
            disagreements += not known
        fixtures.append({"text": text, "ids": ids})
    if disagreements:
        sys.exit(f"{disagreements} disagreement(s) between references; fixture not written")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One fixture per line keeps the file short and its diffs readable.
    lines = ",\n".join(" " + json.dumps(f, ensure_ascii=False) for f in fixtures)
    args.out.write_text("[\n" + lines + "\n]\n", encoding="utf-8")
    print(f"wrote {len(fixtures)} fixtures to {args.out} (references checked: {', '.join(refs)})")


if __name__ == "__main__":
    main()
