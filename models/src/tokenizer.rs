//! Text tokenizer for SentencePiece ("llama"-type) vocabularies stored in GGUF metadata, such as
//! Gemma 3's: builds a Hugging Face `tokenizers::Tokenizer` equivalent to SentencePiece BPE,
//! and owns encoding, decoding and incremental (streaming) detokenization.

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::ModelError;

/// GGUF / llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// SentencePiece's whitespace marker (U+2581): SentencePiece pieces spell spaces with it.
const SPACE_MARK: &str = "\u{2581}";

/// A SentencePiece vocabulary as GGUF stores it (`tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte (see [`token_type`]).
    pub token_types: Vec<i32>,
    pub bos_id: u32,
    pub eos_id: u32,
    pub unk_id: u32,
    pub add_bos: bool,
}

/// A ready-to-use tokenizer: the Hugging Face tokenizer plus the ids the server needs.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Pieces by id, kept so `id_to_piece` can hand out `&str` (the HF API returns `String`).
    pieces: Vec<String>,
    bos_id: u32,
    eos_id: u32,
    add_bos: bool,
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(format!("{context}: {e}"))
}

impl SpmVocab {
    /// Rejects vocabularies the build would silently mis-handle (ragged arrays, bad special ids).
    fn validate(&self) -> Result<(), ModelError> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(tok_err("invalid vocab", "no tokens"));
        }
        if self.scores.len() != n || self.token_types.len() != n {
            return Err(tok_err(
                "invalid vocab",
                format!(
                    "{n} tokens but {} scores and {} token types",
                    self.scores.len(),
                    self.token_types.len()
                ),
            ));
        }
        for (name, id) in [
            ("bos", self.bos_id),
            ("eos", self.eos_id),
            ("unk", self.unk_id),
        ] {
            if id as usize >= n {
                return Err(tok_err(
                    "invalid vocab",
                    format!("{name} id {id} >= vocab size {n}"),
                ));
            }
        }
        Ok(())
    }

    fn is_type(&self, id: usize, ty: i32) -> bool {
        self.token_types[id] == ty
    }
}

/// BPE merges equivalent to SentencePiece BPE's "merge the adjacent pair whose concatenation
/// scores best" rule: every normal piece, best score first (ties: lower id first), contributes
/// each split into two normal pieces, the splits ordered by (left id, right id). This is the
/// rule of HF's `SentencePieceExtractor`, restricted to normal pieces because SentencePiece never
/// merges into control/byte pieces (so literal text like "<0x41>" can't become a byte token).
/// `vocab` is the full piece -> id map, reused here to avoid hashing 262k pieces twice.
fn spm_merges(v: &SpmVocab, vocab: &Vocab) -> Vec<(String, String)> {
    let normal_id = |piece: &str| {
        let id = *vocab.get(piece)?;
        v.is_type(id as usize, token_type::NORMAL).then_some(id)
    };
    let mut order: Vec<u32> = (0..v.tokens.len() as u32)
        .filter(|&id| v.is_type(id as usize, token_type::NORMAL))
        .collect();
    order.sort_unstable_by(|&a, &b| {
        let (sa, sb) = (v.scores[a as usize], v.scores[b as usize]);
        sb.total_cmp(&sa).then(a.cmp(&b))
    });
    let mut merges = Vec::with_capacity(order.len() * 2);
    let mut local: Vec<(u32, u32, usize)> = Vec::new();
    for id in order {
        let piece = v.tokens[id as usize].as_str();
        local.clear();
        // Split only at char boundaries: BPE symbols are whole characters.
        for (at, _) in piece.char_indices().skip(1) {
            if let Some(l) = normal_id(&piece[..at]) {
                if let Some(r) = normal_id(&piece[at..]) {
                    local.push((l, r, at));
                }
            }
        }
        local.sort_unstable();
        let split =
            |&(_, _, at): &(u32, u32, usize)| (piece[..at].to_owned(), piece[at..].to_owned());
        merges.extend(local.iter().map(split));
    }
    merges
}

/// The BPE model over the whole vocabulary (so every id keeps its GGUF number), with byte
/// fallback: characters missing from the vocab become `<0xXX>` byte pieces, as in SentencePiece.
fn build_bpe(v: &SpmVocab) -> Result<BPE, ModelError> {
    let mut vocab = Vocab::with_capacity(v.tokens.len());
    for (id, t) in v.tokens.iter().enumerate() {
        if vocab.insert(t.clone(), id as u32).is_some() {
            return Err(tok_err(
                "invalid vocab",
                format!("duplicate piece {t:?} (id {id})"),
            ));
        }
    }
    let merges = spm_merges(v, &vocab);
    BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(v.tokens[v.unk_id as usize].clone())
        .byte_fallback(true)
        .build()
        .map_err(|e| tok_err("building BPE model", e))
}

/// Control (and unknown) pieces become special added tokens: parsed from text (chat templates
/// write `<start_of_turn>` literally) and dropped by `decode(.., skip_special = true)`.
/// User-defined pieces become plain added tokens matched on the RAW text: GGUF stores the
/// whitespace runs with real spaces ("  "), so they must be matched before spaces turn into `▁`.
fn added_tokens(v: &SpmVocab) -> (Vec<AddedToken>, Vec<AddedToken>) {
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (id, t) in v.tokens.iter().enumerate() {
        match v.token_types[id] {
            token_type::CONTROL | token_type::UNKNOWN => {
                special.push(AddedToken::from(t.clone(), true).normalized(false));
            }
            token_type::USER_DEFINED => {
                user.push(AddedToken::from(t.clone(), false).normalized(false));
            }
            _ => {}
        }
    }
    (special, user)
}

fn build_tokenizer(v: &SpmVocab) -> Result<Tokenizer, ModelError> {
    let mut tk = Tokenizer::new(build_bpe(v)?);
    // Gemma's SentencePiece normalizer is "identity" without a dummy prefix: only spaces change.
    let spaces = Replace::new(" ", SPACE_MARK).map_err(|e| tok_err("normalizer", e))?;
    tk.with_normalizer(Some(NormalizerWrapper::Replace(spaces)));
    let unspace = Replace::new(SPACE_MARK, " ").map_err(|e| tok_err("decoder", e))?;
    let decoder = DecoderSequence::new(vec![
        DecoderWrapper::Replace(unspace),
        DecoderWrapper::ByteFallback(ByteFallback::default()),
        DecoderWrapper::Fuse(Fuse::default()),
    ]);
    tk.with_decoder(Some(DecoderWrapper::Sequence(decoder)));
    let (special, user) = added_tokens(v);
    tk.add_special_tokens(&special);
    tk.add_tokens(&user);
    if tk.get_vocab_size(true) != v.tokens.len() {
        // An added token that got a fresh id would desync ids from the model's embedding rows.
        return Err(tok_err(
            "building tokenizer",
            format!(
                "vocab grew to {} from {}",
                tk.get_vocab_size(true),
                v.tokens.len()
            ),
        ));
    }
    Ok(tk)
}

impl TextTokenizer {
    /// Builds the tokenizer from a GGUF SentencePiece vocabulary (≈1 s for 262k pieces).
    ///
    /// Assumes Gemma's SentencePiece setup: identity normalization and no dummy space prefix
    /// (`tokenizer.ggml.add_space_prefix` false); vocabularies that prepend a space would need
    /// a `Prepend("▁")` normalizer, which this does not add.
    pub fn from_spm_vocab(v: &SpmVocab) -> Result<Self, ModelError> {
        v.validate()?;
        Ok(Self {
            inner: build_tokenizer(v)?,
            pieces: v.tokens.clone(),
            bos_id: v.bos_id,
            eos_id: v.eos_id,
            add_bos: v.add_bos,
        })
    }

    /// Wraps an already built tokenizer (byte-level BPE: `crate::tokenizer_bpe`).
    pub(crate) fn from_parts(inner: Tokenizer, bos_id: u32, eos_id: u32, add_bos: bool) -> Self {
        let n = inner.get_vocab_size(true);
        let pieces = (0..n as u32)
            .map(|id| inner.id_to_token(id).unwrap_or_default())
            .collect();
        Self {
            inner,
            pieces,
            bos_id,
            eos_id,
            add_bos,
        }
    }

    /// Token ids for `text`; control-token spellings in `text` map to their ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tok_err("encode", e))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            ids.push(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text for `ids`; with `skip_special`, control tokens (bos, `<end_of_turn>`, ...) are dropped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tok_err("decode", e))
    }

    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
}

/// Incremental detokenizer for streaming: push token ids, get the newly completed UTF-8 text.
///
/// Decoding ids one at a time is wrong for SentencePiece: a character may span several byte
/// fallback tokens, and a piece's text can depend on its neighbours. This keeps a short window
/// of ids (TGI's / vLLM's prefix-offset technique, as implemented by `tokenizers`) and only
/// emits text once it no longer ends in an incomplete sequence (U+FFFD).
pub struct DecodeStream<'a> {
    inner: tokenizers::tokenizer::DecodeStream<
        'a,
        tokenizers::ModelWrapper,
        NormalizerWrapper,
        tokenizers::PreTokenizerWrapper,
        tokenizers::PostProcessorWrapper,
        DecoderWrapper,
    >,
}

impl<'a> DecodeStream<'a> {
    pub fn new(tok: &'a TextTokenizer, skip_special: bool) -> Self {
        Self {
            inner: tok.inner.decode_stream(skip_special),
        }
    }

    /// Feeds one generated id; returns the text it completed, or `None` if nothing new is
    /// printable yet (an incomplete UTF-8 sequence, or a skipped special token).
    pub fn push(&mut self, id: u32) -> Result<Option<String>, ModelError> {
        self.inner
            .step(id)
            .map_err(|e| tok_err("streaming decode", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny SentencePiece vocab: specials, two user-defined pieces, 256 bytes, then normal
    /// pieces whose scores (not ids) must decide the merge order.
    fn tiny_vocab() -> SpmVocab {
        let mut v = SpmVocab {
            bos_id: 2,
            eos_id: 1,
            unk_id: 3,
            add_bos: true,
            ..Default::default()
        };
        let mut push = |t: &str, s: f32, ty: i32| {
            v.tokens.push(t.to_owned());
            v.scores.push(s);
            v.token_types.push(ty);
        };
        for t in [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<start_of_turn>",
            "<end_of_turn>",
        ] {
            push(t, 0.0, token_type::CONTROL);
        }
        push("\n", 0.0, token_type::USER_DEFINED);
        push("  ", 0.0, token_type::USER_DEFINED);
        for b in 0..=255u32 {
            push(&format!("<0x{b:02X}>"), 0.0, token_type::BYTE);
        }
        // "ab" has the lower id but a worse score than "bc": SentencePiece merges "bc" first.
        let normal = [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("c", -4.0),
            ("h", -5.0),
            ("i", -6.0),
            ("ab", -20.0),
            ("bc", -10.0),
            ("hi", -7.0),
            ("▁hi", -8.0),
            ("▁a", -30.0),
        ];
        for (t, s) in normal {
            push(t, s, token_type::NORMAL);
        }
        v
    }

    fn tiny() -> TextTokenizer {
        TextTokenizer::from_spm_vocab(&tiny_vocab()).unwrap()
    }

    fn ids_of(tok: &TextTokenizer, pieces: &[&str]) -> Vec<u32> {
        pieces
            .iter()
            .map(|p| tok.token_id(p).unwrap_or_else(|| panic!("no piece {p:?}")))
            .collect()
    }

    #[test]
    fn merges_follow_scores_not_ids() {
        let tok = tiny();
        assert_eq!(
            tok.encode("abc", false).unwrap(),
            ids_of(&tok, &["a", "bc"])
        );
        assert_eq!(tok.encode("ab", false).unwrap(), ids_of(&tok, &["ab"]));
        assert_eq!(
            tok.encode(" hi", true).unwrap(),
            [vec![2], ids_of(&tok, &["▁hi"])].concat()
        );
    }

    #[test]
    fn out_of_vocab_char_falls_back_to_bytes() {
        let tok = tiny();
        let ids = tok.encode("aé", false).unwrap();
        assert_eq!(ids, ids_of(&tok, &["a", "<0xC3>", "<0xA9>"]));
        assert_eq!(tok.decode(&ids, false).unwrap(), "aé");
    }

    #[test]
    fn special_and_user_defined_tokens_are_parsed() {
        let tok = tiny();
        let ids = tok
            .encode("<start_of_turn>hi  a\n<end_of_turn>", false)
            .unwrap();
        let want = ids_of(
            &tok,
            &["<start_of_turn>", "hi", "  ", "a", "\n", "<end_of_turn>"],
        );
        assert_eq!(ids, want);
        assert_eq!(tok.decode(&ids, true).unwrap(), "hi  a\n");
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            "<start_of_turn>hi  a\n<end_of_turn>"
        );
    }

    #[test]
    fn accessors_report_vocab_facts() {
        let tok = tiny();
        assert_eq!(tok.vocab_size(), tiny_vocab().tokens.len());
        assert_eq!((tok.bos_id(), tok.eos_id(), tok.add_bos()), (2, 1, true));
        assert_eq!(tok.id_to_piece(4), Some("<start_of_turn>"));
        assert_eq!(tok.id_to_piece(100_000), None);
        assert_eq!(tok.token_id("nope"), None);
    }

    #[test]
    fn decode_stream_emits_emoji_once_complete() {
        let tok = tiny();
        let mut ids = ids_of(&tok, &["▁hi"]);
        ids.extend(
            "😀"
                .bytes()
                .map(|b| tok.token_id(&format!("<0x{b:02X}>")).unwrap()),
        );
        ids.extend(ids_of(&tok, &["▁a", "<end_of_turn>"]));
        let mut stream = DecodeStream::new(&tok, true);
        let out: Vec<Option<String>> = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        let s = |x: &str| Some(x.to_owned());
        assert_eq!(
            out,
            vec![s(" hi"), None, None, None, s("😀"), s(" a"), None]
        );
    }

    #[test]
    fn ragged_vocab_is_rejected() {
        let mut v = tiny_vocab();
        v.scores.pop();
        assert!(TextTokenizer::from_spm_vocab(&v).is_err());
        let mut v = tiny_vocab();
        v.bos_id = 10_000;
        assert!(TextTokenizer::from_spm_vocab(&v).is_err());
    }
}
