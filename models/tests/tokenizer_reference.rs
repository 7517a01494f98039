//! The tokenizer built from the default model's GGUF vocabulary reproduces reference token ids
//! (fixtures made by scripts/make_tokenizer_fixtures.py with Google's SentencePiece, cross-checked
//! against other implementations) and decodes them back to the exact text.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use gridserve_models::loader::read_spm_vocab;
use gridserve_models::tokenizer::{token_type, DecodeStream, TextTokenizer};

const FIXTURES: &str = include_str!("fixtures/gemma3_tokenizer_reference.json");

#[derive(serde::Deserialize)]
struct Fixture {
    text: String,
    /// Reference ids without BOS; control-token spellings in `text` are parsed as control ids.
    ids: Vec<u32>,
}

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models-data/gemma-3-270m-q4_k_m.gguf")
}

struct Loaded {
    tok: TextTokenizer,
    /// Ids the GGUF marks as control tokens: what `skip_special` decoding must drop.
    control: HashSet<u32>,
}

/// One build shared by this file's tests; `None` (tests skip) when the model file is absent.
fn loaded() -> Option<&'static Loaded> {
    static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = model_path();
            if !path.exists() {
                eprintln!("skipping: {} not found", path.display());
                return None;
            }
            let vocab = read_spm_vocab(&path).expect("read the GGUF vocabulary");
            let start = Instant::now();
            let tok = TextTokenizer::from_spm_vocab(&vocab).expect("build the tokenizer");
            eprintln!(
                "built tokenizer for {} pieces in {:?}",
                tok.vocab_size(),
                start.elapsed()
            );
            let control = (0..vocab.tokens.len() as u32)
                .filter(|&i| vocab.token_types[i as usize] == token_type::CONTROL)
                .collect();
            Some(Loaded { tok, control })
        })
        .as_ref()
}

fn tokenizer() -> Option<&'static TextTokenizer> {
    loaded().map(|l| &l.tok)
}

fn fixtures() -> Vec<Fixture> {
    serde_json::from_str(FIXTURES).expect("parse fixture JSON")
}

/// Streams `ids` through a `DecodeStream`, concatenating what it emits.
fn stream_decode(tok: &TextTokenizer, ids: &[u32], skip_special: bool) -> String {
    let mut stream = DecodeStream::new(tok, skip_special);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = stream.push(id).expect("stream decode") {
            out.push_str(&piece);
        }
    }
    out
}

#[test]
fn encodes_every_fixture_to_the_reference_ids() {
    let Some(tok) = tokenizer() else { return };
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 20,
        "fixture file has only {} entries",
        fixtures.len()
    );
    // Collect every mismatch before failing so one run shows the whole picture.
    let mut failures = Vec::new();
    for f in &fixtures {
        let got = tok.encode(&f.text, false).unwrap();
        if got != f.ids {
            failures.push(format!(
                "{:?}\n   got  {got:?}\n   want {:?}",
                f.text, f.ids
            ));
        }
        let with_bos = tok.encode(&f.text, true).unwrap();
        if with_bos.first() != Some(&tok.bos_id()) || with_bos[1..] != got[..] {
            failures.push(format!("{:?}: add_bos gave {with_bos:?}", f.text));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn decodes_every_fixture_back_to_its_text() {
    let Some(Loaded { tok, control }) = loaded() else {
        return;
    };
    for f in fixtures() {
        assert_eq!(
            tok.decode(&f.ids, false).unwrap(),
            f.text,
            "decode of {:?}",
            f.ids
        );
        assert_eq!(
            stream_decode(tok, &f.ids, false),
            f.text,
            "stream decode of {:?}",
            f.ids
        );
        // Skipping specials drops BOS and every control token, and nothing else.
        let with_bos = [&[tok.bos_id()][..], &f.ids].concat();
        let kept: Vec<u32> = f
            .ids
            .iter()
            .copied()
            .filter(|id| !control.contains(id))
            .collect();
        let want = tok.decode(&kept, false).unwrap();
        assert_eq!(
            tok.decode(&with_bos, true).unwrap(),
            want,
            "skip-special decode of {:?}",
            f.text
        );
        assert_eq!(
            stream_decode(tok, &with_bos, true),
            want,
            "skip-special stream of {:?}",
            f.text
        );
    }
}

#[test]
fn gemma3_vocabulary_facts() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos_id(), tok.eos_id(), tok.add_bos()), (2, 1, true));
    assert_eq!(tok.token_id("<start_of_turn>"), Some(105));
    assert_eq!(tok.token_id("<end_of_turn>"), Some(106));
    assert_eq!(tok.id_to_piece(106), Some("<end_of_turn>"));
    assert_eq!(tok.id_to_piece(138), Some("  "));
    assert_eq!(tok.id_to_piece(262_144), None);
}
