//! In-process evaluation, `docs/benchmarks.md` section 1: scenarios S1–S5 for our engine
//! and, with `--features peers`, for Unleash's Yggdrasil and OpenFeature's flagd
//! evaluation engine in the same run, as `S<n>/<engine>`:
//!
//! ```text
//! cargo bench -p flagd-bench                     # ours only
//! cargo bench -p flagd-bench --features peers    # ours, yggdrasil, flagd-engine
//! python3 sdk/bench/table.py target/criterion    # the table of medians and ratios
//! ```
//!
//! - S1 a boolean flag, enabled, no targeting.
//! - S2 a 10% rollout (`fractional` on the targeting key).
//! - S3 `country in [NO, SE, DK] and plan == "pro"` → on, else a 25% rollout.
//! - S4 the S2 shape in a set of 1,000 flags, a random (pre-generated, cycled) key each call.
//! - S5 S2 from 1 and from 2 threads at once (`S5/<engine>/1-thread`, `.../2-threads`):
//!   the time is wall time per evaluation per thread, so the same time on 2 threads means
//!   twice the throughput (criterion's elem/s is the throughput across the threads).
//!
//! The 1,024 user contexts are built before timing and cycled by index. Before any
//! timing, every engine is checked to give the answers its flags are meant to give.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use flagd_bench::{
    Engine, Ours, Outcomes, S1_FLAG, S2_FLAG, S3_FLAG, USERS, User, check, s3_rule_matches,
    s4_key_sequence, users,
};
#[cfg(feature = "peers")]
use flagd_bench::{flagd_engine::FlagdEngine, rollout_agreement, yggdrasil::Yggdrasil};

/// An engine loaded with both documents, its contexts, and the S4 key sequence.
struct Fixture<E: Engine> {
    small: E,
    large: E,
    ctxs: Vec<E::Ctx>,
    keys: Vec<String>,
    /// What the engine answered for every user, to compare peers with ours.
    #[cfg(feature = "peers")]
    outcomes: Outcomes,
}

impl<E: Engine> Fixture<E> {
    /// Loads the engine and checks, outside any timing, that its flags behave as meant.
    fn new(users: &[User]) -> Self {
        let small = E::small();
        let large = E::large();
        let outcomes = Outcomes::of(&small, &large, users);
        if let Err(e) = check(&outcomes, users) {
            panic!("unfair comparison: {e}\n{}", outcomes.summary());
        }
        let ctxs: Vec<E::Ctx> = users.iter().map(E::context).collect();
        // The spot check the comparison rests on: a NO/pro user gets S3 via the rule.
        assert!(s3_rule_matches(&users[0]) && users[0].country == "NO");
        assert!(
            small.enabled(S3_FLAG, &ctxs[0]),
            "{}: S3 off for NO/pro",
            E::NAME
        );
        println!("{}", outcomes.summary());
        Self {
            small,
            large,
            ctxs,
            keys: s4_key_sequence(),
            #[cfg(feature = "peers")]
            outcomes,
        }
    }
}

fn single<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>, flag: &'static str) {
    let mut i = 0usize;
    g.bench_function(E::NAME, |b| {
        b.iter(|| {
            i = (i + 1) & (USERS - 1);
            f.small.enabled(black_box(flag), black_box(&f.ctxs[i]))
        });
    });
}

fn s1<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>) {
    single(g, f, S1_FLAG);
}

fn s2<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>) {
    single(g, f, S2_FLAG);
}

fn s3<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>) {
    single(g, f, S3_FLAG);
}

fn s4<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>) {
    let mask = f.keys.len() - 1;
    debug_assert!(f.keys.len().is_power_of_two());
    let mut i = 0usize;
    g.bench_function(E::NAME, |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let key = f.keys[i & mask].as_str();
            f.large
                .enabled(black_box(key), black_box(&f.ctxs[i & (USERS - 1)]))
        });
    });
}

/// Runs `iters` S2 evaluations on each of `threads` scoped threads started together and
/// returns the longest thread's time (thread start-up is not timed).
fn s2_on_threads<E: Engine>(f: &Fixture<E>, threads: usize, iters: u64) -> Duration {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    // Each thread walks the users from its own offset.
                    let mut i = t * USERS / threads;
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        i = (i + 1) & (USERS - 1);
                        black_box(f.small.enabled(black_box(S2_FLAG), black_box(&f.ctxs[i])));
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(d) => d,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .max()
            .unwrap_or_default()
    })
}

fn s5<E: Engine>(g: &mut BenchmarkGroup<'_, WallTime>, f: &Fixture<E>) {
    for (threads, label) in [(1usize, "1-thread"), (2, "2-threads")] {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(BenchmarkId::new(E::NAME, label), |b| {
            b.iter_custom(|iters| s2_on_threads(f, threads, iters));
        });
    }
}

fn eval(c: &mut Criterion) {
    let users = users();
    let ours = Fixture::<Ours>::new(&users);
    #[cfg(feature = "peers")]
    let ygg = Fixture::<Yggdrasil>::new(&users);
    #[cfg(feature = "peers")]
    let flagd_engine = Fixture::<FlagdEngine>::new(&users);
    #[cfg(feature = "peers")]
    for (name, o) in [
        ("yggdrasil", &ygg.outcomes),
        ("flagd-engine", &flagd_engine.outcomes),
    ] {
        let (same, all) = rollout_agreement(&ours.outcomes, o);
        println!("S2+S4: {name} gives the same answer as ours for {same} of {all} users");
    }

    macro_rules! scenario {
        ($group:literal, $run:ident) => {{
            let mut g = c.benchmark_group($group);
            $run(&mut g, &ours);
            #[cfg(feature = "peers")]
            {
                $run(&mut g, &ygg);
                $run(&mut g, &flagd_engine);
            }
            g.finish();
        }};
    }
    scenario!("S1", s1);
    scenario!("S2", s2);
    scenario!("S3", s3);
    scenario!("S4", s4);
    scenario!("S5", s5);
}

criterion_group!(benches, eval);
criterion_main!(benches);
