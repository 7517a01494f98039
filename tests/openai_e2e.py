#!/usr/bin/env python3
"""End-to-end check of gridserve's OpenAI-compatible API with the unmodified `openai` client.

Run against a server that is already up and ready, serving the default model:

    .venv/bin/python tests/openai_e2e.py --base-url http://127.0.0.1:PORT/v1

Every check runs independently (one failing does not stop the others). The last line printed
is `N passed, M failed`; the exit status is 0 only when nothing failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Callable

import openai

MODEL = "gemma-3-270m-q4_k_m"
PROMPT = "The capital of France"
# Gemma's tokenizer: <bos> The capital of France.
PROMPT_TOKENS = 5
CHAT = [{"role": "user", "content": "Name a color."}]

CHECKS: list[tuple[str, Callable[[openai.OpenAI], None]]] = []


def check(fn: Callable[[openai.OpenAI], None]) -> Callable[[openai.OpenAI], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def greedy(client: openai.OpenAI, max_tokens: int = 12, **kw):
    return client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=max_tokens, temperature=0, **kw
    )


def expect_error(kind: type, call: Callable[[], object], what: str) -> None:
    try:
        result = call()
    except kind as e:
        print(f"    ({what}: HTTP {getattr(e, 'status_code', '?')}: {str(e)[:160]})")
        return
    except openai.APIStatusError as e:
        raise AssertionError(
            f"{what}: expected {kind.__name__}, got HTTP {e.status_code} "
            f"({type(e).__name__}): {str(e)[:300]}"
        ) from None
    raise AssertionError(f"{what}: expected {kind.__name__}, but the request succeeded: {result!r:.300}")


def expect_token_count(entries: int, completion_tokens: int, finish_reason: str | None) -> None:
    """One logprob entry per generated token; an end-of-sequence token that stopped generation
    may or may not be listed."""
    ok = entries == completion_tokens or (finish_reason == "stop" and entries == completion_tokens - 1)
    expect(ok, f"{entries} logprob entries for {completion_tokens} completion tokens (finish {finish_reason!r})")


# --- models ---------------------------------------------------------------------------------


@check
def models_list_has_the_model(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    expect(MODEL in ids, f"models.list() ids {ids} do not include {MODEL!r}")


# --- completions ----------------------------------------------------------------------------


@check
def completion_greedy_says_paris(client: openai.OpenAI) -> None:
    r = greedy(client)
    expect(r.object == "text_completion", f"object is {r.object!r}, expected 'text_completion'")
    expect(r.model == MODEL, f"model is {r.model!r}, expected {MODEL!r}")
    expect(len(r.choices) == 1, f"expected 1 choice, got {len(r.choices)}")
    c = r.choices[0]
    expect(c.index == 0, f"choice index is {c.index}, expected 0")
    expect(c.text.startswith(", Paris"), f"greedy text {c.text!r} does not start with ', Paris'")
    expect(c.finish_reason in ("length", "stop"), f"finish_reason is {c.finish_reason!r}")


@check
def completion_usage_is_consistent(client: openai.OpenAI) -> None:
    r = greedy(client)
    u, c = r.usage, r.choices[0]
    expect(u is not None, "response has no usage")
    expect(
        u.prompt_tokens == PROMPT_TOKENS,
        f"usage.prompt_tokens is {u.prompt_tokens}, expected {PROMPT_TOKENS} (BOS included)",
    )
    if c.finish_reason == "stop":
        expect(
            0 < u.completion_tokens <= 12,
            f"finish_reason 'stop' but completion_tokens is {u.completion_tokens} (max_tokens 12)",
        )
    else:
        expect(
            c.finish_reason == "length",
            f"finish_reason is {c.finish_reason!r}, expected 'length' or 'stop'",
        )
        expect(
            u.completion_tokens == 12,
            f"finish_reason 'length' but completion_tokens is {u.completion_tokens}, expected 12",
        )
    expect(
        u.total_tokens == u.prompt_tokens + u.completion_tokens,
        f"usage.total_tokens {u.total_tokens} != prompt {u.prompt_tokens} + completion {u.completion_tokens}",
    )


@check
def completion_stream_matches_non_stream(client: openai.OpenAI) -> None:
    want = greedy(client).choices[0].text
    parts, finish = [], None
    chunks = 0
    for chunk in greedy(client, stream=True):
        chunks += 1
        expect(chunk.object == "text_completion", f"chunk object is {chunk.object!r}")
        for c in chunk.choices:
            expect(c.index == 0, f"streamed choice index {c.index}, expected 0")
            parts.append(c.text or "")
            if c.finish_reason is not None:
                expect(finish is None, f"finish_reason sent twice ({finish!r}, {c.finish_reason!r})")
                finish = c.finish_reason
    got = "".join(parts)
    expect(chunks > 1, f"stream had only {chunks} chunk(s)")
    expect(got == want, f"streamed text {got!r} != non-streamed text {want!r}")
    expect(finish in ("length", "stop"), f"stream finish_reason is {finish!r}")


@check
def completion_n2_gives_two_choices(client: openai.OpenAI) -> None:
    r = greedy(client, max_tokens=6, n=2)
    idx = sorted(c.index for c in r.choices)
    expect(idx == [0, 1], f"n=2 choice indices are {idx}, expected [0, 1]")
    for c in r.choices:
        expect(c.text.startswith(", Paris"), f"n=2 choice {c.index} greedy text {c.text!r}")
    expect(
        r.usage is None or r.usage.prompt_tokens == PROMPT_TOKENS,
        f"n=2 usage.prompt_tokens is {r.usage and r.usage.prompt_tokens}, expected {PROMPT_TOKENS}",
    )


@check
def completion_stop_cuts_before_the_stop_string(client: openai.OpenAI) -> None:
    full = greedy(client, max_tokens=20).choices[0].text
    expect("." in full, f"reference greedy text {full!r} has no '.' to stop at")
    want = full[: full.index(".")]
    r = greedy(client, max_tokens=20, stop=["."])
    c = r.choices[0]
    expect(c.text == want, f"stop=['.'] text is {c.text!r}, expected {want!r}")
    expect(c.finish_reason == "stop", f"stop=['.'] finish_reason is {c.finish_reason!r}, expected 'stop'")


@check
def completion_seed_is_reproducible(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        return client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=16, temperature=1.0, seed=seed
        ).choices[0].text

    a, b, other = sample(42), sample(42), sample(43)
    expect(a == b, f"temperature=1 seed=42 gave different texts: {a!r} vs {b!r}")
    if a == other:
        print("    (note: seed 43 happened to give the same text as seed 42)")


@check
def completion_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(greedy(client, stream=True, stream_options={"include_usage": True}))
    expect(len(chunks) >= 2, f"only {len(chunks)} chunk(s) streamed")
    last = chunks[-1]
    expect(last.usage is not None, f"last chunk has no usage: {last!r:.300}")
    expect(last.choices == [], f"last (usage) chunk has choices {last.choices!r:.300}, expected []")
    expect(
        last.usage.prompt_tokens == PROMPT_TOKENS,
        f"stream usage.prompt_tokens is {last.usage.prompt_tokens}, expected {PROMPT_TOKENS}",
    )
    expect(
        last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens,
        f"stream usage totals inconsistent: {last.usage!r}",
    )
    want = greedy(client).usage.completion_tokens
    expect(
        last.usage.completion_tokens == want,
        f"stream usage.completion_tokens {last.usage.completion_tokens} != non-stream {want}",
    )
    early = [i for i, ch in enumerate(chunks[:-1]) if ch.usage is not None]
    expect(not early, f"chunks {early} before the last one carry usage (should be null)")


@check
def completion_logprobs(client: openai.OpenAI) -> None:
    r = greedy(client, logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    expect(lp is not None, "logprobs=2 but choice.logprobs is null")
    expect(lp.tokens, f"logprobs.tokens is empty: {lp!r:.300}")
    n = len(lp.tokens)
    expect_token_count(n, r.usage.completion_tokens, c.finish_reason)
    if c.finish_reason == "length":
        expect("".join(lp.tokens) == c.text, f"logprobs.tokens join to {''.join(lp.tokens)!r}, text is {c.text!r}")
    expect(lp.token_logprobs and len(lp.token_logprobs) == n, f"token_logprobs length != {n}")
    expect(all(x <= 1e-6 for x in lp.token_logprobs), f"positive logprob in {lp.token_logprobs}")
    expect(lp.top_logprobs and len(lp.top_logprobs) == n, f"top_logprobs length != {n}")
    for i, top in enumerate(lp.top_logprobs):
        expect(
            isinstance(top, dict) and 2 <= len(top) <= 3,
            f"top_logprobs[{i}] should map 2 (or 3, with the sampled token) tokens: {top!r}",
        )
        best = max(top.values())
        expect(
            lp.token_logprobs[i] >= best - 1e-3,
            f"greedy token {i} {lp.tokens[i]!r} logprob {lp.token_logprobs[i]} below top {best} ({top!r})",
        )


@check
def completion_extra_body_top_k_1_is_greedy(client: openai.OpenAI) -> None:
    want = greedy(client).choices[0].text
    got = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=12, temperature=1.0, seed=7, extra_body={"top_k": 1}
    ).choices[0].text
    expect(got == want, f"top_k=1 at temperature 1 gave {got!r}, greedy gives {want!r}")


@check
def completion_extra_body_ignore_eos(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, extra_body={"ignore_eos": True}
    )
    c = r.choices[0]
    expect(c.finish_reason == "length", f"ignore_eos finish_reason is {c.finish_reason!r}, expected 'length'")
    expect(r.usage.completion_tokens == 40, f"ignore_eos completion_tokens {r.usage.completion_tokens}, expected 40")


# --- chat -----------------------------------------------------------------------------------


def chat(client: openai.OpenAI, **kw):
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(model=MODEL, messages=CHAT, temperature=0, **kw)


@check
def chat_non_stream_and_stream_agree(client: openai.OpenAI) -> None:
    r = chat(client)
    expect(r.object == "chat.completion", f"object is {r.object!r}, expected 'chat.completion'")
    expect(len(r.choices) == 1, f"expected 1 choice, got {len(r.choices)}")
    c = r.choices[0]
    expect(c.message.role == "assistant", f"message.role is {c.message.role!r}")
    want = c.message.content or ""
    expect(want.strip() != "", f"chat content is empty: {want!r}")
    expect(c.finish_reason in ("length", "stop"), f"finish_reason is {c.finish_reason!r}")
    expect(r.usage is not None and r.usage.completion_tokens > 0, f"usage is {r.usage!r}")

    parts, finish, first = [], None, True
    for chunk in chat(client, stream=True):
        expect(chunk.object == "chat.completion.chunk", f"chunk object is {chunk.object!r}")
        for ch in chunk.choices:
            if first:
                expect(ch.delta.role == "assistant", f"first delta has role {ch.delta.role!r}, expected 'assistant'")
                first = False
            parts.append(ch.delta.content or "")
            if ch.finish_reason is not None:
                finish = ch.finish_reason
    expect(not first, "chat stream had no choices at all")
    got = "".join(parts)
    expect(got == want, f"streamed chat text {got!r} != non-streamed {want!r}")
    expect(finish == c.finish_reason, f"stream finish_reason {finish!r} != non-stream {c.finish_reason!r}")


@check
def chat_stream_include_usage(client: openai.OpenAI) -> None:
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    last = chunks[-1]
    expect(last.usage is not None, f"last chat chunk has no usage: {last!r:.300}")
    expect(last.choices == [], f"last chat (usage) chunk has choices {last.choices!r:.300}")
    expect(last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0, f"usage {last.usage!r}")


@check
def chat_logprobs(client: openai.OpenAI) -> None:
    r = chat(client, logprobs=True, top_logprobs=2)
    c = r.choices[0]
    expect(c.logprobs is not None and c.logprobs.content, f"chat logprobs missing: {c.logprobs!r:.300}")
    content = c.logprobs.content
    expect_token_count(len(content), r.usage.completion_tokens, c.finish_reason)
    for i, t in enumerate(content):
        expect(t.logprob <= 1e-6, f"entry {i} {t.token!r} has positive logprob {t.logprob}")
        expect(len(t.top_logprobs) == 2, f"entry {i} has {len(t.top_logprobs)} top_logprobs, expected 2")
        best = max(x.logprob for x in t.top_logprobs)
        expect(t.logprob >= best - 1e-3, f"greedy entry {i} {t.token!r} logprob {t.logprob} below top {best}")


@check
def chat_n2_gives_two_choices(client: openai.OpenAI) -> None:
    r = chat(client, n=2, max_tokens=4)
    idx = sorted(c.index for c in r.choices)
    expect(idx == [0, 1], f"chat n=2 choice indices are {idx}, expected [0, 1]")


# --- errors ---------------------------------------------------------------------------------


@check
def error_unknown_model_is_404(client: openai.OpenAI) -> None:
    expect_error(
        openai.NotFoundError,
        lambda: client.completions.create(model="no-such-model", prompt="hi", max_tokens=1),
        "unknown model (completions)",
    )
    expect_error(
        openai.NotFoundError,
        lambda: client.chat.completions.create(model="no-such-model", messages=CHAT, max_tokens=1),
        "unknown model (chat)",
    )


@check
def error_negative_max_tokens_is_400(client: openai.OpenAI) -> None:
    expect_error(
        openai.BadRequestError,
        lambda: client.completions.create(model=MODEL, prompt="hi", max_tokens=-1),
        "max_tokens=-1",
    )


@check
def error_prompt_longer_than_context_is_400(client: openai.OpenAI) -> None:
    # ~9000 tokens: over the default 8192-token limit (engine.max_seq_len).
    expect_error(
        openai.BadRequestError,
        lambda: client.completions.create(model=MODEL, prompt="hello " * 9000, max_tokens=4),
        "9000-token prompt",
    )


@check
def server_still_serves_after_errors(client: openai.OpenAI) -> None:
    r = greedy(client, max_tokens=4)
    expect(r.choices[0].text.startswith(", Paris"), f"greedy text after errors: {r.choices[0].text!r}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("-k", dest="only", help="run only checks whose name contains this")
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key="unused", timeout=60.0, max_retries=0)
    passed = failed = 0
    for name, fn in CHECKS:
        if args.only and args.only not in name:
            continue
        t0 = time.monotonic()
        try:
            fn(client)
        except AssertionError as e:
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.2f} s): {e}", flush=True)
        except Exception as e:  # noqa: BLE001 - any error is a failed check, not a crash
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.2f} s): {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.2f} s)", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
