//! Error type for geometry and packed-buffer validation.

use core::fmt;

/// Which of the two symbols a buffer or index belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    /// The caching symbol S_c (`sparse_info`): one bit per (query block, head).
    Caching,
    /// The skip symbol S_s (`sparse_kv_info`): one bit per (query block, head, KV block).
    Skip,
}

impl SymbolKind {
    /// Short human-readable name, e.g. `"caching symbol S_c"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Caching => "caching symbol S_c",
            Self::Skip => "skip symbol S_s",
        }
    }
}

impl fmt::Display for SymbolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can be wrong with a symbol geometry, packed buffers or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymbolError {
    /// The head count is zero.
    ZeroHeads,
    /// A block size is zero (`query == true`: the query block size, else the KV one).
    ZeroBlockSize {
        /// `true` for the query block size, `false` for the KV block size.
        query: bool,
    },
    /// A request's bit count, or the total packed byte count, does not fit in `u32`.
    TooLarge {
        /// The symbol whose size overflows.
        symbol: SymbolKind,
        /// The request at which the overflow was detected.
        request: usize,
    },
    /// An indptr array does not have `B + 1` entries.
    IndptrLength {
        /// The symbol the indptr belongs to.
        symbol: SymbolKind,
        /// Expected length (`number of requests + 1`).
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// An indptr array does not start at 0.
    IndptrStart {
        /// The symbol the indptr belongs to.
        symbol: SymbolKind,
        /// The value found in `indptr[0]`.
        got: u32,
    },
    /// An indptr array decreases: `indptr[request + 1] < indptr[request]`.
    IndptrDecreasing {
        /// The symbol the indptr belongs to.
        symbol: SymbolKind,
        /// The request whose segment has a negative length.
        request: usize,
        /// `indptr[request]`.
        start: u32,
        /// `indptr[request + 1]`.
        end: u32,
    },
    /// A request's packed segment length disagrees with its sequence lengths,
    /// head count and block sizes.
    SegmentSize {
        /// The symbol the segment belongs to.
        symbol: SymbolKind,
        /// The request whose segment is wrong.
        request: usize,
        /// Logical bit count implied by the geometry.
        bits: u32,
        /// Expected byte length, `ceil(bits / 8)`.
        expected: u32,
        /// Byte length given by the indptr.
        got: u32,
    },
    /// The packed buffer's length differs from the last indptr entry (the segments
    /// run past the end of the buffer, or the buffer has trailing bytes).
    BufferLength {
        /// The symbol the buffer belongs to.
        symbol: SymbolKind,
        /// Length implied by the indptr (`indptr[B]`).
        expected: usize,
        /// Actual buffer length.
        got: usize,
    },
    /// A logical (unpacked) mask has the wrong number of elements.
    MaskLength {
        /// The symbol the mask belongs to.
        symbol: SymbolKind,
        /// Expected element count (sum over requests of the logical lengths).
        expected: usize,
        /// Actual element count.
        got: usize,
    },
    /// A request index is out of range.
    RequestOutOfRange {
        /// The requested index.
        request: usize,
        /// The number of requests.
        requests: usize,
    },
    /// A query block index is out of range for its request.
    QBlockOutOfRange {
        /// The request.
        request: usize,
        /// The requested query block.
        q_block: u32,
        /// The request's query block count.
        num_q_blocks: u32,
    },
    /// A head index is out of range.
    HeadOutOfRange {
        /// The requested head.
        head: u32,
        /// The head count.
        heads: u32,
    },
    /// A KV block index is out of range for its request.
    KvBlockOutOfRange {
        /// The request.
        request: usize,
        /// The requested KV block.
        kv_block: u32,
        /// The request's KV block count.
        num_kv_blocks: u32,
    },
    /// A head range is empty or reaches past the head count.
    HeadRange {
        /// First head of the range.
        start: u32,
        /// One past the last head of the range.
        end: u32,
        /// The head count of the symbols being sliced.
        heads: u32,
    },
    /// The heads cannot be split into equal contiguous ranges over the ranks
    /// (`ranks == 0` or `heads % ranks != 0`).
    UnevenHeadSplit {
        /// Total head count.
        heads: u32,
        /// Number of ranks.
        ranks: u32,
    },
    /// A rank index is not below the number of ranks.
    RankOutOfRange {
        /// The requested rank.
        rank: u32,
        /// The number of ranks.
        ranks: u32,
    },
}

impl fmt::Display for SymbolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ZeroHeads => f.write_str("symbol geometry: the number of heads must be positive"),
            Self::ZeroBlockSize { query } => {
                write!(f, "symbol geometry: the {} block size must be positive", if query { "query" } else { "KV" })
            }
            Self::TooLarge { symbol, request } => {
                write!(f, "{symbol}: size overflows u32 at request {request} (too many blocks or heads)")
            }
            Self::IndptrLength { symbol, expected, got } => {
                write!(f, "{symbol} indptr: expected {expected} entries (requests + 1), got {got}")
            }
            Self::IndptrStart { symbol, got } => {
                write!(f, "{symbol} indptr: first entry must be 0, got {got}")
            }
            Self::IndptrDecreasing { symbol, request, start, end } => {
                write!(f, "{symbol} indptr: decreases at request {request} ({start} -> {end})")
            }
            Self::SegmentSize { symbol, request, bits, expected, got } => write!(
                f,
                "{symbol}: request {request} needs {bits} bits = {expected} packed bytes, \
                 but its indptr segment has {got} bytes (inconsistent with the sequence \
                 lengths, head count or block sizes)"
            ),
            Self::BufferLength { symbol, expected, got } => {
                write!(f, "{symbol} buffer: indptr ends at byte {expected} but the buffer has {got} bytes")
            }
            Self::MaskLength { symbol, expected, got } => {
                write!(f, "{symbol} mask: expected {expected} logical elements, got {got}")
            }
            Self::RequestOutOfRange { request, requests } => {
                write!(f, "request {request} out of range ({requests} requests)")
            }
            Self::QBlockOutOfRange { request, q_block, num_q_blocks } => {
                write!(f, "query block {q_block} out of range for request {request} ({num_q_blocks} query blocks)")
            }
            Self::HeadOutOfRange { head, heads } => {
                write!(f, "head {head} out of range ({heads} heads)")
            }
            Self::KvBlockOutOfRange { request, kv_block, num_kv_blocks } => {
                write!(f, "KV block {kv_block} out of range for request {request} ({num_kv_blocks} KV blocks)")
            }
            Self::HeadRange { start, end, heads } => {
                write!(f, "head range {start}..{end} is empty or exceeds the {heads} heads of the symbols")
            }
            Self::UnevenHeadSplit { heads, ranks } => {
                write!(f, "cannot split {heads} heads into equal contiguous ranges over {ranks} ranks")
            }
            Self::RankOutOfRange { rank, ranks } => {
                write!(f, "rank {rank} out of range ({ranks} ranks)")
            }
        }
    }
}

impl core::error::Error for SymbolError {}
