//! Reading model files: GGUF metadata and tensors, behind a `WeightSource` that tests can
//! replace with tensors built in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::tokenizer::SpmVocab;
use crate::ModelError;

/// Where an architecture's loader gets its tensors from, by GGUF tensor name.
pub trait WeightSource {
    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError>;

    /// A small tensor (norm weights) as plain f32.
    fn f32_vec(&mut self, name: &str) -> Result<Vec<f32>, ModelError> {
        let t = self.tensor(name)?.dequantize(&Device::Cpu)?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// An open GGUF file: metadata parsed, tensors read on demand.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
        let content = Content::read(&mut reader).map_err(|e| {
            ModelError::Format(format!("{}: not a readable GGUF file: {e}", path.display()))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn architecture(&self) -> Result<String, ModelError> {
        Ok(self.meta_str("general.architecture")?.to_string())
    }

    pub fn tensor_count(&self) -> usize {
        self.content.tensor_infos.len()
    }

    fn meta(&self, key: &str) -> Result<&Value, ModelError> {
        self.content.metadata.get(key).ok_or_else(|| {
            ModelError::Format(format!("{}: missing metadata `{key}`", self.path.display()))
        })
    }

    pub fn has_meta(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn meta_str(&self, key: &str) -> Result<&str, ModelError> {
        Ok(self
            .meta(key)?
            .to_string()
            .map_err(|e| self.bad(key, e))?
            .as_str())
    }

    /// Integer metadata, whatever integer width the writer chose.
    pub fn meta_usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.meta(key)?;
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) => u64::try_from(*x).map_err(|e| self.bad(key, e))?,
            Value::I16(x) => u64::try_from(*x).map_err(|e| self.bad(key, e))?,
            Value::I32(x) => u64::try_from(*x).map_err(|e| self.bad(key, e))?,
            Value::I64(x) => u64::try_from(*x).map_err(|e| self.bad(key, e))?,
            other => return Err(self.bad(key, format!("expected an integer, found {other:?}"))),
        };
        usize::try_from(n).map_err(|e| self.bad(key, e))
    }

    pub fn meta_f32(&self, key: &str) -> Result<f32, ModelError> {
        match self.meta(key)? {
            Value::F32(x) => Ok(*x),
            Value::F64(x) => Ok(*x as f32),
            other => Err(self.bad(key, format!("expected a float, found {other:?}"))),
        }
    }

    pub fn meta_bool(&self, key: &str) -> Result<bool, ModelError> {
        self.meta(key)?.to_bool().map_err(|e| self.bad(key, e))
    }

    fn meta_array(&self, key: &str) -> Result<&Vec<Value>, ModelError> {
        self.meta(key)?.to_vec().map_err(|e| self.bad(key, e))
    }

    /// A string array (`tokenizer.ggml.tokens`, `.merges`).
    pub fn meta_strings(&self, key: &str) -> Result<Vec<String>, ModelError> {
        self.meta_array(key)?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }

    /// An integer array (`tokenizer.ggml.token_type`).
    pub fn meta_i32s(&self, key: &str) -> Result<Vec<i32>, ModelError> {
        self.meta_array(key)?
            .iter()
            .map(|v| v.to_i32().map_err(|e| self.bad(key, e)))
            .collect()
    }

    /// The chat template the file carries (`tokenizer.chat_template`), if any.
    pub fn chat_template(&self) -> Option<String> {
        self.meta_str("tokenizer.chat_template")
            .ok()
            .map(str::to_string)
    }

    fn bad(&self, key: &str, e: impl std::fmt::Display) -> ModelError {
        ModelError::Format(format!("{}: metadata `{key}`: {e}", self.path.display()))
    }

    /// The SentencePiece vocabulary stored under `tokenizer.ggml.*`.
    pub fn spm_vocab(&self) -> Result<SpmVocab, ModelError> {
        let model = self.meta_str("tokenizer.ggml.model")?;
        if model != "llama" {
            return Err(ModelError::Tokenizer(format!(
                "tokenizer model `{model}` is not supported (expected SentencePiece, `llama`)"
            )));
        }
        let tokens = self
            .meta_array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| self.bad("tokenizer.ggml.tokens", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scores = self
            .meta_array("tokenizer.ggml.scores")?
            .iter()
            .map(|v| v.to_f32().map_err(|e| self.bad("tokenizer.ggml.scores", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = self
            .meta_array("tokenizer.ggml.token_type")?
            .iter()
            .map(|v| {
                v.to_i32()
                    .map_err(|e| self.bad("tokenizer.ggml.token_type", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = |key: &str| -> Result<u32, ModelError> { Ok(self.meta_usize(key)? as u32) };
        Ok(SpmVocab {
            tokens,
            scores,
            token_types,
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
            unk_id: id("tokenizer.ggml.unknown_token_id")?,
            add_bos: self
                .meta_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(true),
        })
    }
}

impl WeightSource for GgufFile {
    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| {
                ModelError::Format(format!("{}: tensor `{name}`: {e}", self.path.display()))
            })
    }
}

/// Reads only the tokenizer vocabulary of a GGUF file.
pub fn read_spm_vocab(path: &Path) -> Result<SpmVocab, ModelError> {
    GgufFile::open(path)?.spm_vocab()
}

/// Tensors built in memory, for tests and for tools that synthesise a model.
#[derive(Default)]
pub struct InMemoryWeights {
    pub tensors: HashMap<String, QTensor>,
}

impl WeightSource for InMemoryWeights {
    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        self.tensors
            .remove(name)
            .ok_or_else(|| ModelError::Format(format!("missing tensor `{name}`")))
    }
}
