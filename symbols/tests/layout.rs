//! Hand-computed packed layouts: exact bytes and indptrs for small cases.

use flashomni_symbols::{
    BlockState, PackedSymbols, RequestShape, SymbolError, SymbolGeometry, SymbolKind, SymbolsView, pack_segment,
    read_bit, unpack_segment,
};

#[test]
fn lsb_first_bit_order() {
    let bits = [true, false, false, false, false, false, false, false, false, true];
    assert_eq!(pack_segment(&bits), vec![0x01, 0x02]);
    assert_eq!(pack_segment(&[false, true, true]), vec![0x06]);
    assert_eq!(pack_segment(&[]), Vec::<u8>::new());
    assert_eq!(unpack_segment(&[0x01, 0x02], 10), bits.to_vec());
    assert_eq!(read_bit(&[0x01, 0x02], 9), Some(true));
    assert_eq!(read_bit(&[0x01, 0x02], 8), Some(false));
}

/// Two requests, H = 2, Bq = Bk = 128:
/// request 0: q_len 200 (nq = 2), kv_len 300 (nk = 3); request 1: q_len 100, kv_len 100 (nq = nk = 1).
fn two_request_geometry(reqs: &[RequestShape]) -> SymbolGeometry<'_> {
    SymbolGeometry::new(2, 128, 128, reqs).unwrap()
}

const REQS: [RequestShape; 2] = [RequestShape::new(200, 300), RequestShape::new(100, 100)];

// S_c, request 0 ([qb][h]): (0,0)=1 (0,1)=0 (1,0)=1 (1,1)=1 -> bits 1,0,1,1 -> 0b1101
// S_c, request 1: (0,0)=0 (0,1)=1 -> bits 0,1 -> 0b10
const CACHING_MASK: [bool; 6] = [true, false, true, true, false, true];
const CACHING_BYTES: [u8; 2] = [0x0D, 0x02];
const CACHING_INDPTR: [u32; 3] = [0, 1, 2];

// S_s, request 0 ([qb][h][kb], nk = 3):
//   (0,0): 1 0 1   -> idx 0..3
//   (0,1): 0 0 0   -> idx 3..6
//   (1,0): 1 1 1   -> idx 6..9
//   (1,1): 0 1 0   -> idx 9..12
//   byte 0 = idx 0..8 = 1,0,1,0,0,0,1,1 -> 0b1100_0101 = 0xC5
//   byte 1 = idx 8..12 = 1,0,1,0        -> 0b0000_0101 = 0x05
// S_s, request 1 (nk = 1): (0,0): 1, (0,1): 0 -> 0x01
const SKIP_MASK: [bool; 14] = [
    true, false, true, false, false, false, true, true, true, false, true, false, //
    true, false,
];
const SKIP_BYTES: [u8; 3] = [0xC5, 0x05, 0x01];
const SKIP_INDPTR: [u32; 3] = [0, 2, 3];

#[test]
fn two_requests_exact_bytes() {
    let g = two_request_geometry(&REQS);
    assert_eq!([g.num_q_blocks(0), g.num_kv_blocks(0)], [2, 3]);
    assert_eq!([g.num_q_blocks(1), g.num_kv_blocks(1)], [1, 1]);
    assert_eq!([g.caching_bits(0), g.caching_bits(1)], [4, 2]);
    assert_eq!([g.skip_bits(0), g.skip_bits(1)], [12, 2]);
    assert_eq!([0, 1, 2].map(|b| g.caching_indptr_at(b)), CACHING_INDPTR);
    assert_eq!([0, 1, 2].map(|b| g.skip_indptr_at(b)), SKIP_INDPTR);
    assert_eq!((g.caching_bytes_total(), g.skip_bytes_total()), (2, 3));

    let p = PackedSymbols::from_masks(&g, &CACHING_MASK, &SKIP_MASK).unwrap();
    assert_eq!(p.caching(), CACHING_BYTES);
    assert_eq!(p.caching_indptr(), CACHING_INDPTR);
    assert_eq!(p.skip(), SKIP_BYTES);
    assert_eq!(p.skip_indptr(), SKIP_INDPTR);

    // The same symbols through the closure constructor.
    let q = PackedSymbols::from_fn(
        &g,
        |b, qb, h| matches!((b, qb, h), (0, 0, 0) | (0, 1, _) | (1, 0, 1)),
        |b, qb, h, kb| match (b, qb, h) {
            (0, 0, 0) => kb != 1,
            (0, 1, 0) | (1, 0, 0) => true,
            (0, 1, 1) => kb == 1,
            _ => false,
        },
    );
    assert_eq!(p, q);
}

#[test]
fn two_requests_view_reads() {
    let g = two_request_geometry(&REQS);
    let v = SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR).unwrap();
    assert!(v.compute(0, 0, 0));
    assert!(!v.compute(0, 0, 1));
    assert!(v.compute(0, 1, 1));
    assert!(!v.compute(1, 0, 0));
    assert!(v.compute(1, 0, 1));
    let row: Vec<bool> = (0..3).map(|kb| v.attend(0, 1, 1, kb)).collect();
    assert_eq!(row, [false, true, false]);
    assert!(v.attend(1, 0, 0, 0));
    assert!(!v.attend(1, 0, 1, 0));

    assert_eq!(v.state(0, 0, 0), BlockState::COMPUTE | BlockState::ATTENDS_ANY);
    assert_eq!(v.state(0, 0, 1), BlockState::empty());
    assert_eq!(v.state(0, 1, 0), BlockState::all());
    assert_eq!(v.state(0, 1, 1), BlockState::COMPUTE | BlockState::ATTENDS_ANY);
    assert_eq!(v.state(1, 0, 0), BlockState::ATTENDS_ANY | BlockState::ATTENDS_ALL);
    assert!(v.state(1, 0, 1).is_computed_empty());

    let s = v.stats();
    assert_eq!((s.rows, s.computed_rows, s.cached_rows()), (6, 4, 2));
    assert_eq!((s.kv_blocks, s.kept_kv_blocks), (14, 7));
    assert_eq!((s.computed_kv_blocks, s.kept_computed_kv_blocks), (10, 6));
    assert!((s.caching_ratio() - 2.0 / 6.0).abs() < 1e-15);
    assert!((s.kv_density() - 0.5).abs() < 1e-15);
    assert!((s.kv_density_computed() - 0.6).abs() < 1e-15);
    assert!((s.attention_work() - 6.0 / 14.0).abs() < 1e-15);

    assert_eq!(v.caching_segment(1), Some(&[0x02u8][..]));
    assert_eq!(v.skip_segment(0), Some(&[0xC5u8, 0x05][..]));
    assert_eq!(v.skip_segment(2), None);
}

#[test]
fn out_of_range_lookups() {
    let g = two_request_geometry(&REQS);
    let v = SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR).unwrap();
    assert_eq!(v.try_compute(2, 0, 0), Err(SymbolError::RequestOutOfRange { request: 2, requests: 2 }));
    assert_eq!(v.try_compute(1, 1, 0), Err(SymbolError::QBlockOutOfRange { request: 1, q_block: 1, num_q_blocks: 1 }));
    assert_eq!(v.try_attend(0, 0, 2, 0), Err(SymbolError::HeadOutOfRange { head: 2, heads: 2 }));
    assert_eq!(
        v.try_attend(0, 0, 0, 3),
        Err(SymbolError::KvBlockOutOfRange { request: 0, kv_block: 3, num_kv_blocks: 3 })
    );
    assert_eq!(v.try_attend(0, 1, 1, 1), Ok(true));
    assert!(v.try_state(0, 2, 0).is_err());
}

#[test]
#[should_panic(expected = "KV block 3 out of range for request 0 (3 KV blocks)")]
fn attend_panics_out_of_range() {
    let g = two_request_geometry(&REQS);
    let v = SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR).unwrap();
    let _ = v.attend(0, 0, 0, 3);
}

#[test]
fn padding_bits_are_ignored_by_readers() {
    let g = two_request_geometry(&REQS);
    // Set every padding bit: bits 4..8 of S_c byte 0, 2..8 of byte 1, 4..8 of S_s byte 1, 2..8 of byte 2.
    let c = [CACHING_BYTES[0] | 0xF0, CACHING_BYTES[1] | 0xFC];
    let s = [SKIP_BYTES[0], SKIP_BYTES[1] | 0xF0, SKIP_BYTES[2] | 0xFC];
    let v = SymbolsView::new(g, &c, &CACHING_INDPTR, &s, &SKIP_INDPTR).unwrap();
    let clean = SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR).unwrap();
    assert_eq!(v.stats(), clean.stats());
}

#[test]
fn each_validation_error() {
    let g = two_request_geometry(&REQS);
    let new = |c: &[u8], ci: &[u32], s: &[u8], si: &[u32]| SymbolsView::new(g, c, ci, s, si).map(|_| ());
    let (c, ci, s, si) = (&CACHING_BYTES[..], &CACHING_INDPTR[..], &SKIP_BYTES[..], &SKIP_INDPTR[..]);
    assert_eq!(
        new(c, &[0, 1], s, si),
        Err(SymbolError::IndptrLength { symbol: SymbolKind::Caching, expected: 3, got: 2 })
    );
    assert_eq!(new(c, ci, s, &[1, 2, 3]), Err(SymbolError::IndptrStart { symbol: SymbolKind::Skip, got: 1 }));
    assert_eq!(
        new(c, ci, s, &[0, 2, 1]),
        Err(SymbolError::IndptrDecreasing { symbol: SymbolKind::Skip, request: 1, start: 2, end: 1 })
    );
    assert_eq!(
        new(c, ci, s, &[0, 1, 2]),
        Err(SymbolError::SegmentSize { symbol: SymbolKind::Skip, request: 0, bits: 12, expected: 2, got: 1 })
    );
    assert_eq!(
        new(c, ci, &s[..2], si),
        Err(SymbolError::BufferLength { symbol: SymbolKind::Skip, expected: 3, got: 2 })
    );
    assert_eq!(
        new(&[0x0D, 0x02, 0x00], ci, s, si),
        Err(SymbolError::BufferLength { symbol: SymbolKind::Caching, expected: 2, got: 3 })
    );
}

#[test]
fn inconsistent_geometry_is_rejected() {
    // Request 1 with 129 query tokens: nq = 2, S_c needs 4 bits = 1 byte (still fits),
    // S_s needs 4 bits = 1 byte (still fits) -> accepted: byte counts are what is checked.
    let reqs = [REQS[0], RequestShape::new(129, 100)];
    let g = SymbolGeometry::new(2, 128, 128, &reqs).unwrap();
    assert!(SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR).is_ok());
    // Request 1 with kv_len 600 -> nk = 5, S_s needs 10 bits = 2 bytes but has 1.
    let reqs = [REQS[0], RequestShape::new(100, 600)];
    let g = SymbolGeometry::new(2, 128, 128, &reqs).unwrap();
    assert_eq!(
        SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR),
        Err(SymbolError::SegmentSize { symbol: SymbolKind::Skip, request: 1, bits: 10, expected: 2, got: 1 })
    );
    // Five heads: request 0 S_c needs 10 bits = 2 bytes.
    let g = SymbolGeometry::new(5, 128, 128, &REQS).unwrap();
    assert_eq!(
        SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR),
        Err(SymbolError::SegmentSize { symbol: SymbolKind::Caching, request: 0, bits: 10, expected: 2, got: 1 })
    );
    // Smaller KV block: request 0 has nk = 5 with Bk = 64 -> 20 bits = 3 bytes.
    let g = SymbolGeometry::new(2, 128, 64, &REQS).unwrap();
    assert_eq!(
        SymbolsView::new(g, &CACHING_BYTES, &CACHING_INDPTR, &SKIP_BYTES, &SKIP_INDPTR),
        Err(SymbolError::SegmentSize { symbol: SymbolKind::Skip, request: 0, bits: 20, expected: 3, got: 2 })
    );
}

#[test]
fn mask_length_errors() {
    let g = two_request_geometry(&REQS);
    assert_eq!(
        PackedSymbols::from_masks(&g, &CACHING_MASK[..5], &SKIP_MASK),
        Err(SymbolError::MaskLength { symbol: SymbolKind::Caching, expected: 6, got: 5 })
    );
    let mut long = SKIP_MASK.to_vec();
    long.push(true);
    assert_eq!(
        PackedSymbols::from_masks(&g, &CACHING_MASK, &long),
        Err(SymbolError::MaskLength { symbol: SymbolKind::Skip, expected: 14, got: 15 })
    );
}

#[test]
fn dense_and_empty() {
    let g = two_request_geometry(&REQS);
    let d = PackedSymbols::dense(&g);
    assert_eq!(d.caching(), [0x0F, 0x03]);
    assert_eq!(d.skip(), [0xFF, 0x0F, 0x03]);
    let s = d.view().stats();
    assert_eq!((s.caching_ratio(), s.kv_density(), s.kv_density_computed()), (0.0, 1.0, 1.0));

    let g = SymbolGeometry::new(4, 128, 128, &[]).unwrap();
    let e = PackedSymbols::dense(&g);
    assert_eq!((e.caching_indptr(), e.skip_indptr()), (&[0u32][..], &[0u32][..]));
    let s = e.view().stats();
    assert_eq!(s, Default::default());
    assert_eq!((s.caching_ratio(), s.kv_density(), s.kv_density_computed()), (0.0, 1.0, 1.0));
    assert!(SymbolsView::new(g, &[], &[0], &[], &[0]).is_ok());
}

#[test]
fn error_messages_name_buffer_and_numbers() {
    let e = SymbolError::SegmentSize { symbol: SymbolKind::Skip, request: 3, bits: 20, expected: 3, got: 2 };
    let msg = e.to_string();
    for needle in ["skip symbol S_s", "request 3", "20 bits", "3 packed bytes", "2 bytes"] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    let e = SymbolError::BufferLength { symbol: SymbolKind::Caching, expected: 7, got: 9 };
    assert_eq!(e.to_string(), "caching symbol S_c buffer: indptr ends at byte 7 but the buffer has 9 bytes");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("S_c"));
}
