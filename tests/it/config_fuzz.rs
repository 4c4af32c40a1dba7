//! Time-boxed fuzzing of the native vm.conf parser: mutations of the corpus
//! in `tests/fixtures/conf/` (bytes flipped, inserted, deleted, lines
//! spliced from other files), fed to `parse_bytes` until the time box ends.
//!
//! What must hold for every input: no panic; a file the parser rejects as
//! invalid names `FILE:LINE:` with a line inside the file (or just past its
//! end, for an unterminated construct); a file it hands to bash names a
//! line inside the file too.
//!
//! `BBVIRT_FUZZ_SECS` sets the time box (default 3 s in `cargo test`),
//! `BBVIRT_FUZZ_SEED` replays a run (the seed is printed on failure).
//! cargo-fuzz would need a nightly toolchain, which the build machines do
//! not have: this is the same idea on stable.

use std::path::Path;
use std::time::{Duration, Instant};

use bbvirt::config::{NativeError, parse_bytes};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"DOMAIN_RNG_",
    b"DOMAIN_URI_",
    b"DOMAIN_NAME_",
    b"BBVIRT_TIMEOUT=",
    b"=(",
    b"+=(",
    b")",
    b"\"",
    b"'",
    b"\\",
    b"$",
    b"$(",
    b"`",
    b"#",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"declare -a ",
    b"export ",
    b"readonly ",
    b"KWIF4Q",
    b"\xff",
    b"\0",
    b"\xc3\xa9",
    b";",
    b"&&",
    b"{",
    b"}",
];

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conf");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, t.iter().copied());
            }
            2 if !b.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                let at = at.min(end);
                b.drain(at..end);
            }
            3 => {
                // a line from another file
                let other = &corpus[rng.below(corpus.len())];
                let lines: Vec<&[u8]> = other.split(|&c| c == b'\n').collect();
                let line = lines[rng.below(lines.len())];
                let mut ins = line.to_vec();
                ins.push(b'\n');
                b.splice(at..at, ins);
            }
            _ => b.insert(at, rng.next() as u8),
        }
    }
    b
}

#[test]
fn native_parser_survives_time_boxed_fuzzing() {
    let secs: u64 = std::env::var("BBVIRT_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("BBVIRT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let corpus = corpus();
    assert!(corpus.len() >= 20, "corpus missing");
    let mut rng = Rng(seed);
    let path = Path::new("fuzz.conf");
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut invalid, mut bash, mut ok) = (0u64, 0u64, 0u64, 0u64);
    while Instant::now() < end {
        let input = mutate(&mut rng, &corpus);
        let lines = input.split(|&c| c == b'\n').count();
        let result = std::panic::catch_unwind(|| parse_bytes(path, &input));
        let Ok(result) = result else {
            panic!(
                "parser panicked (BBVIRT_FUZZ_SEED={seed}, run {runs}) on {:?}",
                String::from_utf8_lossy(&input)
            );
        };
        match result {
            Ok(_) => ok += 1,
            Err(NativeError::NeedsBash { line, .. }) => {
                bash += 1;
                assert!(
                    (1..=lines).contains(&line),
                    "needs-bash line {line} of {lines} (BBVIRT_FUZZ_SEED={seed})"
                );
            }
            Err(NativeError::Invalid(e)) => {
                invalid += 1;
                let msg = e.to_string();
                let line: usize = msg
                    .strip_prefix("fuzz.conf:")
                    .and_then(|r| r.split(':').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("error without FILE:LINE: {msg} (BBVIRT_FUZZ_SEED={seed})")
                    });
                assert!(
                    (1..=lines + 1).contains(&line),
                    "{msg}: line outside the file of {lines} lines (BBVIRT_FUZZ_SEED={seed})"
                );
            }
        }
        runs += 1;
    }
    eprintln!(
        "fuzzed {runs} inputs in {secs} s (seed {seed}): {ok} parsed, {bash} handed to bash, {invalid} invalid"
    );
    assert!(runs > 100, "too few runs: {runs}");
    assert!(
        ok > 0 && invalid > 0,
        "the mutations never hit both outcomes"
    );
}
