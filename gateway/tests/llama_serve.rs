//! `gridserve serve` on a Llama-family checkpoint, end to end: a tiny Qwen2 safetensors
//! directory and a tiny Llama GGUF (written by the test), served with their own chat template;
//! an OpenAI chat request gets a completion, and a CPU-only build asked for a GPU says so.

mod real_server;

use gridserve_models::testing::llama::{weights, write_checkpoint, write_gguf};
use real_server::{http, Server};
use serde_json::json;

fn chat(server: &mut Server, model: &str) -> serde_json::Value {
    server.wait_ready();
    let body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "the hat"}],
        "max_tokens": 6,
        "temperature": 0
    });
    let (status, text) = http(
        "POST",
        &server.url("/v1/chat/completions"),
        Some(body),
        None,
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_qwen2_checkpoint_and_a_llama_gguf_serve_chat_with_their_own_template() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny-qwen2");
    std::fs::create_dir(&ckpt).unwrap();
    write_checkpoint(&ckpt, "qwen2", &weights(3, true, true), true);
    let gguf = dir.path().join("tiny-llama.gguf");
    write_gguf(&gguf, "llama", &weights(4, false, false));
    for (path, name) in [(&ckpt, "tiny-qwen2"), (&gguf, "tiny-llama")] {
        let path = path.to_str().unwrap();
        let mut server = Server::start(&["--model", path, "--chat-template", "model"], &[]);
        let reply = chat(&mut server, name);
        assert_eq!(reply["model"], name, "{reply}");
        let usage = &reply["usage"];
        // The model's template wraps the turn as `<|user|>the hat<|eot_id|><|assistant|>`: 8
        // byte tokens, "t"+"he", " "+"h"+"a"+"t", the special `<|eot_id|>`, 13 byte tokens.
        assert_eq!(usage["prompt_tokens"], 28, "{reply}");
        let finish = reply["choices"][0]["finish_reason"].as_str().unwrap();
        assert!(finish == "length" || finish == "stop", "{reply}");
        let (status, models) = http("GET", &server.url("/v1/models"), None, None);
        assert_eq!(status, 200);
        assert!(models.contains(name), "{models}");
        assert!(server.terminate().success());
    }
}

#[test]
#[cfg(not(feature = "cuda"))]
fn a_cpu_build_asked_for_a_gpu_exits_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny-llama.gguf");
    write_gguf(&gguf, "llama", &weights(4, false, false));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gridserve"))
        .current_dir(real_server::root())
        .args(["--model", gguf.to_str().unwrap(), "--device", "cuda:0"])
        .args(["generate", "--prompt", "hi", "--max-tokens", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cuda:0") && stderr.contains("without the `cuda` feature"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
