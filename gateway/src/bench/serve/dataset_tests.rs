//! The datasets on a tiny letter tokenizer: exact random lengths, ShareGPT's filters, custom
//! rows reused in order, a trace's arrivals and tiers.

use clap::Parser;
use gridserve_models::tokenizer::{token_type, SpmVocab, TextTokenizer};

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: BenchServeArgs,
}

fn args(extra: &[&str]) -> BenchServeArgs {
    Cli::try_parse_from(std::iter::once("bench").chain(extra.iter().copied()))
        .expect("options parse")
        .args
}

/// Control pieces, `▁`, then `a`..=`z`: every letter is one token.
fn letters() -> TextTokenizer {
    let mut v = SpmVocab {
        bos_id: 1,
        eos_id: 2,
        unk_id: 0,
        add_bos: true,
        ..Default::default()
    };
    let mut push = |piece: &str, ty: i32| {
        v.scores.push(-(v.tokens.len() as f32));
        v.tokens.push(piece.to_owned());
        v.token_types.push(ty);
    };
    for piece in ["<unk>", "<bos>", "<eos>"] {
        push(piece, token_type::CONTROL);
    }
    push("\u{2581}", token_type::NORMAL);
    for c in 'a'..='z' {
        push(&c.to_string(), token_type::NORMAL);
    }
    TextTokenizer::from_spm_vocab(&v).expect("test vocab builds")
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn random_prompts_have_the_asked_lengths_and_follow_the_seed() {
    let tok = letters();
    let a = args(&[
        "--num-prompts",
        "20",
        "--random-input-len",
        "40",
        "--random-output-len",
        "10",
        "--random-range-ratio",
        "0.5",
        "--seed",
        "3",
    ]);
    let reqs = sample(&a, Some(&tok)).unwrap();
    assert_eq!(reqs.len(), 20);
    for r in &reqs {
        let n = tok.encode(&r.prompt, false).unwrap().len();
        assert_eq!(Some(n), r.prompt_len);
        assert!((20..=60).contains(&n), "{n}");
        assert!((5..=15).contains(&r.output_len));
        assert!(
            !r.prompt.contains('<'),
            "control pieces leaked: {}",
            r.prompt
        );
    }
    assert!(reqs.iter().any(|r| r.prompt_len != reqs[0].prompt_len));
    assert_eq!(sample(&a, Some(&tok)).unwrap(), reqs);
    let fixed = sample(
        &args(&["--num-prompts", "3", "--random-input-len", "16"]),
        Some(&tok),
    )
    .unwrap();
    assert!(fixed
        .iter()
        .all(|r| r.prompt_len == Some(16) && r.output_len == 128));
    assert!(sample(&args(&["--random-range-ratio", "1.0"]), Some(&tok)).is_err());
    assert!(sample(&a, None)
        .unwrap_err()
        .to_string()
        .contains("tokenizer"));
}

#[test]
fn sharegpt_takes_first_turns_and_drops_what_vllm_drops() {
    let dir = tempfile::tempdir().unwrap();
    let conv = |human: &str, gpt: &str| {
        format!(
            r#"{{"conversations":[{{"from":"human","value":"{human}"}},{{"from":"gpt","value":"{gpt}"}}]}}"#
        )
    };
    let text = format!(
        "[{}, {}, {}, {}]",
        conv("abcdefgh", "abcdef"),
        conv("abc", "abcdefgh"), // prompt too short
        conv("abcdefgh", "ab"),  // reply too short
        r#"{"conversations":[{"from":"human","value":"only one turn"}]}"#
    );
    let path = file(&dir, "sg.json", &text);
    let tok = letters();
    let reqs = sample(
        &args(&[
            "--dataset-name",
            "sharegpt",
            "--dataset-path",
            &path,
            "--num-prompts",
            "10",
        ]),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (
            reqs[0].prompt.as_str(),
            reqs[0].prompt_len,
            reqs[0].output_len
        ),
        ("abcdefgh", Some(8), 6)
    );
    // --output-len replaces the reply's length (and its minimum).
    let fixed = sample(
        &args(&[
            "--dataset-name",
            "sharegpt",
            "--dataset-path",
            &path,
            "--output-len",
            "2",
        ]),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(fixed.len(), 2);
    assert!(fixed.iter().all(|r| r.output_len == 2));
    let broken = file(&dir, "bad.json", "{\"not\": \"a list\"}");
    assert!(sample(
        &args(&["--dataset-name", "sharegpt", "--dataset-path", &broken]),
        Some(&tok)
    )
    .is_err());
    assert!(sample(&args(&["--dataset-name", "sharegpt"]), Some(&tok))
        .unwrap_err()
        .to_string()
        .contains("--dataset-path"));
}

#[test]
fn custom_rows_are_reused_in_order_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "c.jsonl",
        "{\"prompt\": \"abc\", \"output_tokens\": 5}\n\n{\"prompt\": \"xyz\"}\n",
    );
    let reqs = sample(
        &args(&[
            "--dataset-name",
            "custom",
            "--dataset-path",
            &path,
            "--num-prompts",
            "5",
            "--output-len",
            "7",
        ]),
        None,
    )
    .unwrap();
    let seen: Vec<(&str, usize)> = reqs
        .iter()
        .map(|r| (r.prompt.as_str(), r.output_len))
        .collect();
    assert_eq!(
        seen,
        vec![("abc", 5), ("xyz", 7), ("abc", 5), ("xyz", 7), ("abc", 5)]
    );
    assert!(reqs.iter().all(|r| r.prompt_len.is_none()));
    let bad = file(&dir, "bad.jsonl", "{\"prompt\": \"a\", \"extra\": 1}\n");
    let err = sample(
        &args(&["--dataset-name", "custom", "--dataset-path", &bad]),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn traces_give_arrivals_lengths_and_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(
        &dir,
        "t.csv",
        "arrival_seconds,prompt_tokens,output_tokens,priority\n0.5,12,3,flexible\n1.25,20,4,\n",
    );
    let tok = letters();
    let reqs = sample(
        &args(&["--dataset-name", "trace", "--dataset-path", &path]),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[0].arrival_s, reqs[0].prompt_len, reqs[0].output_len),
        (Some(0.5), Some(12), 3)
    );
    assert_eq!(
        (reqs[0].tier, reqs[1].tier),
        (Some(Priority::Flexible), Some(Priority::Standard))
    );
    let no_tiers = file(
        &dir,
        "n.csv",
        "arrival_seconds,prompt_tokens,output_tokens\n0,4,2\n",
    );
    let reqs = sample(
        &args(&["--dataset-name", "trace", "--dataset-path", &no_tiers]),
        Some(&tok),
    )
    .unwrap();
    assert_eq!(reqs[0].tier, None);
}
