//! `cargo bench -p bitmountain-erasure --bench erasure`: our shard pipeline against bare
//! `reed-solomon-erasure` on the same buffers in the same run, and the bytes a 4 KiB read costs.
//! Prints measured value, baseline and ratio; figures go to docs/benchmarks-erasure.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use bitmountain_erasure::{
    BundleDescription, BundleId, BundleInfo, BundleReader, Code, IndexLocation, ShardSink,
    ShardSource, StreamingWriter, StripeEncoder,
};
use reed_solomon_erasure::galois_8::ReedSolomon;

const K: usize = 10;
const M: usize = 4;
const CELL_BYTES: usize = 1 << 20;
const STRIPES: usize = 8;
const ROUNDS: usize = 21;

fn bundle(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Rounds per measurement: `BENCH_ROUNDS`, default 21.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
}

/// Best wall time of each job over `rounds()` rounds. The jobs run interleaved (round r runs
/// every job once), so load from other processes on the shared machine hits ours and the bare
/// baseline alike instead of whichever happened to run during a busy second; the best run is
/// the least disturbed.
fn race(jobs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    let mut best = vec![Duration::MAX; jobs.len()];
    for _ in 0..rounds() {
        for (job, best) in jobs.iter_mut().zip(&mut best) {
            let start = Instant::now();
            job();
            *best = (*best).min(start.elapsed());
        }
    }
    best
}

/// Best wall time of one job (component costs).
fn best_of(mut f: impl FnMut()) -> Duration {
    race(&mut [&mut f])[0]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mib_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

fn report(name: &str, bytes: usize, ours: Duration, bare: Duration) {
    let ours_rate = mib_per_s(bytes, ours);
    let bare_rate = mib_per_s(bytes, bare);
    println!(
        "{name:<44} ours {ours_rate:>8.0} MiB/s   bare {bare_rate:>8.0} MiB/s   ratio {:.2}",
        ours_rate / bare_rate
    );
}

/// A memory sink that keeps only the latest append (a reused buffer: measures the copy, not
/// the growth of a huge Vec).
#[derive(Default)]
struct MemSink {
    buf: Vec<u8>,
    total: u64,
}

impl ShardSink for MemSink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(bytes);
        self.total += bytes.len() as u64;
        Ok(())
    }
}

/// Counts bytes and reads through the ShardSource seam.
struct Counting<'a> {
    inner: &'a Vec<u8>,
    bytes: Cell<u64>,
    reads: Cell<u64>,
}

impl ShardSource for Counting<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(offset, buf)?;
        self.bytes.set(self.bytes.get() + n as u64);
        self.reads.set(self.reads.get() + 1);
        Ok(n)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }
}

impl<'a> Counting<'a> {
    fn new(inner: &'a Vec<u8>) -> Self {
        Self {
            inner,
            bytes: Cell::new(0),
            reads: Cell::new(0),
        }
    }
}

/// Shards 2.. of a bundle: the first two data shards missing.
fn missing_two(shard_files: &[Vec<u8>]) -> Vec<Option<&Vec<u8>>> {
    shard_files
        .iter()
        .enumerate()
        .map(|(i, s)| (i >= 2).then_some(s))
        .collect()
}

fn main() {
    let code = Code::with_sizes(K, M, CELL_BYTES as u32, 64 << 10).unwrap();
    let len = K * CELL_BYTES * STRIPES;
    let data = bundle(len);
    let rs = ReedSolomon::new(K, M).unwrap();
    println!(
        "RS({K},{M}), cell {CELL_BYTES} B, chunk 64 KiB, bundle {} MiB, best of {} interleaved \
         rounds; load average at the start: {}",
        len >> 20,
        rounds(),
        loadavg()
    );

    encode(code, &data, &rs);

    // --- reconstruct 2 missing data shards ---------------------------------------------------
    let sinks = vec![Vec::new(); K + M];
    let mut w = StreamingWriter::new(code, BundleId([1; 16]), sinks).unwrap();
    w.write_bundle_bytes(&data).unwrap();
    let (info, shard_files): (BundleInfo, Vec<Vec<u8>>) = w
        .finish(IndexLocation::default(), &BundleDescription::default())
        .unwrap();

    // Bare: the same cells as plain buffers, shards 0 and 1 missing.
    let mut stripes: Vec<Vec<Vec<u8>>> = data
        .chunks_exact(K * CELL_BYTES)
        .map(|stripe| {
            let mut cells: Vec<Vec<u8>> = stripe
                .chunks_exact(CELL_BYTES)
                .map(<[u8]>::to_vec)
                .collect();
            cells.extend(vec![vec![0u8; CELL_BYTES]; M]);
            rs.encode(&mut cells).unwrap();
            cells
        })
        .collect();
    if std::env::var_os("BENCH_PROFILE_RECONSTRUCT").is_some() {
        profile_reconstruct(code, info, &shard_files, len);
        return;
    }
    reconstruct(code, &data, &rs, info, &shard_files, &mut stripes);
    println!("load average at the end: {}", loadavg());

    small_read(&data, info, &shard_files);
}

/// Encoding the bundle: ours at three depths against bare `encode_sep` on the same cells.
fn encode(code: Code, data: &[u8], rs: &ReedSolomon) {
    let len = data.len();
    let mut parity = vec![vec![0u8; CELL_BYTES]; M];
    let mut bare_encode = || {
        for stripe in data.chunks_exact(K * CELL_BYTES) {
            let cells: Vec<&[u8]> = stripe.chunks_exact(CELL_BYTES).collect();
            rs.encode_sep(&cells, &mut parity).unwrap();
        }
    };
    let mut encode_whole_stripes = || {
        let mut enc = StripeEncoder::new(code, BundleId([1; 16])).unwrap();
        enc.set_hash_bundle(false);
        let mut framed_bytes = 0usize;
        for stripe in data.chunks_exact(K * CELL_BYTES) {
            enc.push_stripe_with(stripe, |_, piece| {
                framed_bytes += std::hint::black_box(piece).len()
            });
        }
        assert!(framed_bytes > len);
        enc.finish_with_sha256(
            IndexLocation::default(),
            [0; 32],
            &BundleDescription::default(),
        )
        .unwrap();
    };
    let mut encode_pieces = || {
        let mut enc = StripeEncoder::new(code, BundleId([1; 16])).unwrap();
        enc.set_hash_bundle(false);
        for piece in data.chunks(256 << 10) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = enc.fill(rest);
                rest = &rest[n..];
                if let Some(stripe) = enc.take_stripe() {
                    enc.recycle(stripe);
                }
            }
        }
        enc.finish_with_sha256(
            IndexLocation::default(),
            [0; 32],
            &BundleDescription::default(),
        )
        .unwrap();
    };
    let mut encode_sinks = || {
        let sinks: Vec<MemSink> = (0..K + M).map(|_| MemSink::default()).collect();
        let mut w = StreamingWriter::new(code, BundleId([1; 16]), sinks).unwrap();
        for piece in data.chunks(256 << 10) {
            w.write_bundle_bytes(piece).unwrap();
        }
        w.finish(IndexLocation::default(), &BundleDescription::default())
            .unwrap();
    };
    let [bare_encode, encode_whole_stripes, encode_pieces, encode_sinks] = race(&mut [
        &mut bare_encode,
        &mut encode_whole_stripes,
        &mut encode_pieces,
        &mut encode_sinks,
    ])[..] else {
        unreachable!()
    };
    if std::env::var_os("BENCH_DETAIL").is_some() {
        encode_detail(data, rs, &mut parity, bare_encode);
    }
    report(
        "encode: layout+RS+CRC framing, no output copy",
        len,
        encode_whole_stripes,
        bare_encode,
    );
    report(
        "encode: 256 KiB pieces (copy in + out buffers)",
        len,
        encode_pieces,
        bare_encode,
    );
    report(
        "encode: + SHA-256 + copy into memory sinks",
        len,
        encode_sinks,
        bare_encode,
    );
}

/// `BENCH_DETAIL`: the components of an encode (RS in 64 KiB blocks, CRC32C, memcpy).
fn encode_detail(data: &[u8], rs: &ReedSolomon, parity: &mut [Vec<u8>], bare_encode: Duration) {
    let len = data.len();
    let blocked = best_of(|| {
        for stripe in data.chunks_exact(K * CELL_BYTES) {
            for start in (0..CELL_BYTES).step_by(64 << 10) {
                let cells: Vec<&[u8]> = stripe
                    .chunks_exact(CELL_BYTES)
                    .map(|c| &c[start..start + (64 << 10)])
                    .collect();
                let mut p: Vec<&mut [u8]> = parity
                    .iter_mut()
                    .map(|p| &mut p[start..start + (64 << 10)])
                    .collect();
                rs.encode_sep(&cells, &mut p).unwrap();
            }
        }
    });
    report(
        "detail: bare RS in 64 KiB blocks",
        len,
        blocked,
        bare_encode,
    );
    let crc = best_of(|| {
        let mut x = 0;
        for c in data.chunks(64 << 10) {
            x ^= bitmountain_erasure::crc::crc32c(c);
        }
        assert_ne!(x, 1);
    });
    report(
        "detail: our crc32c (crc-fast) over the bundle",
        len,
        crc,
        bare_encode,
    );
    let mut dst = vec![0u8; 1 << 20];
    let copy = best_of(|| {
        for c in data.chunks(1 << 20) {
            std::hint::black_box(&mut dst[..]).copy_from_slice(std::hint::black_box(c));
        }
    });
    report("detail: memcpy of the bundle", len, copy, bare_encode);
}

/// For `perf record`: the reconstruct path alone, many times.
fn profile_reconstruct(code: Code, info: BundleInfo, shard_files: &[Vec<u8>], len: usize) {
    let window = code.stripe_data_bytes();
    let mut bytes = vec![0u8; window as usize];
    let mut reader = BundleReader::new(info, missing_two(shard_files)).unwrap();
    for _ in 0..20 {
        let mut offset = 0;
        while offset < len as u64 {
            reader.read_range_into(offset, &mut bytes).unwrap();
            offset += window;
        }
    }
}

/// Reading a bundle with 2 data shards missing: ours (borrowed sources, copying sources, with
/// the bundle's SHA-256) against bare `reconstruct_data` on `stripes`, the same cells as plain
/// buffers.
fn reconstruct(
    code: Code,
    data: &[u8],
    rs: &ReedSolomon,
    info: BundleInfo,
    shard_files: &[Vec<u8>],
    stripes: &mut [Vec<Vec<u8>>],
) {
    let len = data.len();
    let mut bare_reconstruct_job = || bare_reconstruct(rs, stripes);
    let window = code.stripe_data_bytes();
    // The caller's output buffer, reused like the bare side's cell buffers (a fresh 10 MiB
    // buffer per read would time page faults, not the pipeline).
    let mut bytes = vec![0u8; window as usize];
    let mut ours_reconstruct = || {
        let mut reader = BundleReader::new(info, missing_two(shard_files)).unwrap();
        let mut offset = 0;
        while offset < len as u64 {
            reader.read_range_into(offset, &mut bytes).unwrap();
            assert_eq!(bytes[..16], data[offset as usize..offset as usize + 16]);
            offset += window;
        }
    };
    let mut ours_reconstruct_sha = || {
        let mut reader = BundleReader::new(info, missing_two(shard_files)).unwrap();
        reader.read_bundle(&mut io::sink()).unwrap();
    };
    // The same read from sources that cannot lend (like files: `read_at` copies into the
    // reader's buffers, one request per shard per range, checked before use).
    let copying: Vec<Counting> = shard_files.iter().map(Counting::new).collect();
    let mut copied = vec![0u8; window as usize];
    let mut ours_reconstruct_copying = || {
        let sources = copying
            .iter()
            .enumerate()
            .map(|(i, s)| (i >= 2).then_some(s))
            .collect();
        let mut reader = BundleReader::new(info, sources).unwrap();
        let mut offset = 0;
        while offset < len as u64 {
            reader.read_range_into(offset, &mut copied).unwrap();
            offset += window;
        }
    };
    let [bare_reconstruct, ours_reconstruct, ours_reconstruct_sha, ours_reconstruct_copying] =
        race(&mut [
            &mut bare_reconstruct_job,
            &mut ours_reconstruct,
            &mut ours_reconstruct_sha,
            &mut ours_reconstruct_copying,
        ])[..]
    else {
        unreachable!()
    };
    assert_eq!(copied, data[len - window as usize..]);
    if std::env::var_os("BENCH_DETAIL").is_some() {
        reconstruct_detail(rs, stripes, len, ours_reconstruct);
    }
    assert_eq!(bytes, data[len - window as usize..]);
    for (cells, stripe) in stripes.iter().zip(data.chunks_exact(K * CELL_BYTES)) {
        assert_eq!(cells[..2].concat(), stripe[..2 * CELL_BYTES]);
    }
    report(
        "reconstruct-2: read+CRC verify+RS+assemble",
        len,
        ours_reconstruct,
        bare_reconstruct,
    );
    report(
        "reconstruct-2: sources that copy (read_at)",
        len,
        ours_reconstruct_copying,
        bare_reconstruct,
    );
    report(
        "reconstruct-2: + SHA-256 of the bundle",
        len,
        ours_reconstruct_sha,
        bare_reconstruct,
    );
}

/// The bare side: data cells 0 and 1 of every stripe decoded in place from the others.
fn bare_reconstruct(rs: &ReedSolomon, stripes: &mut [Vec<Vec<u8>>]) {
    for cells in stripes.iter_mut() {
        let mut slots: Vec<(&mut [u8], bool)> = cells
            .iter_mut()
            .enumerate()
            .map(|(i, c)| (&mut c[..], i >= 2))
            .collect();
        rs.reconstruct_data(&mut slots).unwrap();
    }
}

/// `BENCH_DETAIL`: what the bare reconstruct leaves out (assembling the range, the CRC32C of
/// the cells read), done around the bare decode and alone.
fn reconstruct_detail(
    rs: &ReedSolomon,
    stripes: &mut [Vec<Vec<u8>>],
    len: usize,
    ours_reconstruct: Duration,
) {
    // What the bare side leaves out: our read hands back the range in one buffer (8 healthy
    // cells copied, 2 decoded into place), and checks the 10 cells it reads. The same two
    // steps done around the bare decode, and alone, in the same interleaved rounds.
    let assembled = std::cell::RefCell::new(vec![0u8; K * CELL_BYTES]);
    let stripes = std::cell::RefCell::new(stripes);
    let mut bare_again = || bare_reconstruct(rs, &mut stripes.borrow_mut());
    let mut bare_assemble = || {
        let mut assembled = assembled.borrow_mut();
        for cells in stripes.borrow_mut().iter_mut() {
            let (missing, rest) = assembled.split_at_mut(2 * CELL_BYTES);
            for (dst, cell) in rest.chunks_exact_mut(CELL_BYTES).zip(&cells[2..K]) {
                dst.copy_from_slice(cell);
            }
            let mut decoded = missing.chunks_exact_mut(CELL_BYTES);
            let mut slots: Vec<(&mut [u8], bool)> = Vec::with_capacity(K + M);
            for (i, cell) in cells.iter_mut().enumerate() {
                slots.push(match (i < 2, decoded.next()) {
                    (true, Some(out)) => (out, false),
                    _ => (&mut cell[..], true),
                });
            }
            rs.reconstruct_data(&mut slots).unwrap();
        }
    };
    let mut crc_survivors = || {
        let mut x = 0;
        for cells in stripes.borrow().iter() {
            for cell in &cells[2..K + 2] {
                for chunk in cell.chunks(64 << 10) {
                    x ^= bitmountain_erasure::crc::crc32c(chunk);
                }
            }
        }
        assert_ne!(x, 1);
    };
    let mut copy_healthy = || {
        let mut assembled = assembled.borrow_mut();
        for cells in stripes.borrow().iter() {
            for (dst, cell) in assembled.chunks_exact_mut(CELL_BYTES).zip(&cells[2..K]) {
                std::hint::black_box(dst).copy_from_slice(cell);
            }
        }
    };
    let [bare, bare_assembled, crc, copy] = race(&mut [
        &mut bare_again,
        &mut bare_assemble,
        &mut crc_survivors,
        &mut copy_healthy,
    ])[..] else {
        unreachable!()
    };
    report(
        "detail: bare reconstruct + assemble (copy 8)",
        len,
        bare_assembled,
        bare,
    );
    report("detail: CRC32C of the 10 cells read", len, crc, bare);
    report("detail: memcpy of the 8 healthy cells", len, copy, bare);
    report(
        "detail: ours against bare + assemble",
        len,
        ours_reconstruct,
        bare_assembled,
    );
}

/// The bytes one 4 KiB read costs, from known bundle info and from shard files alone.
fn small_read(data: &[u8], info: BundleInfo, shard_files: &[Vec<u8>]) {
    let counting: Vec<Counting> = shard_files.iter().map(Counting::new).collect();
    let mut reader = BundleReader::new(info, counting.iter().map(Some).collect()).unwrap();
    let offset = 3 * CELL_BYTES as u64 + 5 * 65536 + 512;
    let got = reader.read_range(offset, 4096).unwrap();
    assert_eq!(got, data[offset as usize..offset as usize + 4096]);
    let touched: Vec<(usize, u64, u64)> = counting
        .iter()
        .enumerate()
        .filter(|(_, c)| c.reads.get() > 0)
        .map(|(i, c)| (i, c.reads.get(), c.bytes.get()))
        .collect();
    let total: u64 = touched.iter().map(|t| t.2).sum();
    println!(
        "4 KiB read at bundle offset {offset} from healthy shards: {total} bytes read \
         (shard, reads, bytes) = {touched:?}; header/footer reads: 0 (bundle info known)"
    );
    let files: Vec<&Vec<u8>> = shard_files.iter().collect();
    let counting_open: Vec<Counting> = files.iter().map(|s| Counting::new(s)).collect();
    let (mut reader, _) = BundleReader::open(counting_open.iter().collect()).unwrap();
    let opened: u64 = counting_open.iter().map(|c| c.bytes.get()).sum();
    reader.read_range(offset, 4096).unwrap();
    let after: u64 = counting_open.iter().map(|c| c.bytes.get()).sum();
    println!(
        "same read after opening from shard files alone: open reads {opened} bytes (header + footer \
         of {} shards), then {} bytes",
        K + M,
        after - opened
    );
}
