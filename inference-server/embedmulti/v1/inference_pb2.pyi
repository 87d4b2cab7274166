from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch_size", "max_batch_tokens", "max_message_bytes", "max_text_chars")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    max_batch_tokens: int
    max_message_bytes: int
    max_text_chars: int
    def __init__(self, max_batch_size: _Optional[int] = ..., max_batch_tokens: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_text_chars: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("server_version", "device", "dtype", "engine", "models", "limits")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    device: str
    dtype: str
    engine: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    limits: Limits
    def __init__(self, server_version: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., engine: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_id", "revision", "device", "dtype", "max_length", "prefix", "normalize", "truncate_dim", "quantize", "calibration_texts")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_DIM_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_TEXTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    revision: str
    device: str
    dtype: str
    max_length: int
    prefix: str
    normalize: bool
    truncate_dim: int
    quantize: str
    calibration_texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_id: _Optional[str] = ..., revision: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_length: _Optional[int] = ..., prefix: _Optional[str] = ..., normalize: _Optional[bool] = ..., truncate_dim: _Optional[int] = ..., quantize: _Optional[str] = ..., calibration_texts: _Optional[_Iterable[str]] = ...) -> None: ...

class QuantizeFidelity(_message.Message):
    __slots__ = ("rows", "min_cosine", "mean_cosine", "calibration_sha256")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    MEAN_COSINE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SHA256_FIELD_NUMBER: _ClassVar[int]
    rows: int
    min_cosine: float
    mean_cosine: float
    calibration_sha256: str
    def __init__(self, rows: _Optional[int] = ..., min_cosine: _Optional[float] = ..., mean_cosine: _Optional[float] = ..., calibration_sha256: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_key", "model_id", "revision", "dim", "max_length", "pooling", "normalize", "prefix", "dtype", "device", "tokenized_rows", "truncate_dim", "engine", "precision", "quantize", "quantize_fidelity")
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZED_ROWS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_DIM_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIELD_NUMBER: _ClassVar[int]
    QUANTIZE_FIDELITY_FIELD_NUMBER: _ClassVar[int]
    model_key: str
    model_id: str
    revision: str
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    prefix: str
    dtype: str
    device: str
    tokenized_rows: int
    truncate_dim: int
    engine: str
    precision: str
    quantize: str
    quantize_fidelity: QuantizeFidelity
    def __init__(self, model_key: _Optional[str] = ..., model_id: _Optional[str] = ..., revision: _Optional[str] = ..., dim: _Optional[int] = ..., max_length: _Optional[int] = ..., pooling: _Optional[str] = ..., normalize: _Optional[bool] = ..., prefix: _Optional[str] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., tokenized_rows: _Optional[int] = ..., truncate_dim: _Optional[int] = ..., engine: _Optional[str] = ..., precision: _Optional[str] = ..., quantize: _Optional[str] = ..., quantize_fidelity: _Optional[_Union[QuantizeFidelity, _Mapping]] = ...) -> None: ...

class CountTokensRequest(_message.Message):
    __slots__ = ("model_key", "texts", "return_ids")
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    model_key: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    return_ids: bool
    def __init__(self, model_key: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., return_ids: _Optional[bool] = ...) -> None: ...

class CountTokensResponse(_message.Message):
    __slots__ = ("counts", "tokens")
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    tokens: TokenIds
    def __init__(self, counts: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Union[TokenIds, _Mapping]] = ...) -> None: ...

class TokenIds(_message.Message):
    __slots__ = ("ids", "lengths", "truncated")
    IDS_FIELD_NUMBER: _ClassVar[int]
    LENGTHS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    lengths: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, ids: _Optional[bytes] = ..., lengths: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[bool]] = ...) -> None: ...

class EmbedBatch(_message.Message):
    __slots__ = ("batch_id", "model_key", "texts", "tokens")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_KEY_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    model_key: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    tokens: TokenIds
    def __init__(self, batch_id: _Optional[int] = ..., model_key: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., tokens: _Optional[_Union[TokenIds, _Mapping]] = ...) -> None: ...

class Embeddings(_message.Message):
    __slots__ = ("rows", "dim", "data", "token_counts", "truncated")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dim: int
    data: bytes
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, rows: _Optional[int] = ..., dim: _Optional[int] = ..., data: _Optional[bytes] = ..., token_counts: _Optional[_Iterable[int]] = ..., truncated: _Optional[_Iterable[bool]] = ...) -> None: ...

class BatchError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbedResult(_message.Message):
    __slots__ = ("batch_id", "embeddings", "error")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    embeddings: Embeddings
    error: BatchError
    def __init__(self, batch_id: _Optional[int] = ..., embeddings: _Optional[_Union[Embeddings, _Mapping]] = ..., error: _Optional[_Union[BatchError, _Mapping]] = ...) -> None: ...
