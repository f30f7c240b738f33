//! Fixtures and engine adapters for the in-process evaluation benchmarks
//! (`docs/benchmarks.md` section 1, scenarios S1–S5).
//!
//! The benchmark itself is `benches/eval.rs`; this library holds what it and the
//! fairness checks share: the 1,024 users, the flag documents (flagd JSON for our
//! engine and the flagd evaluation engine, Unleash client-features JSON for
//! Yggdrasil), and one [`Engine`] adapter per engine so every scenario runs the same
//! generic code against each of them.
//!
//! The peers are compiled only with the `peers` feature:
//! `cargo bench -p flagd-bench --features peers`.

use flagd_core::{EvaluationContext, Snapshot};
use serde_json::{Value as Json, json};

#[cfg(feature = "peers")]
pub mod flagd_engine;
#[cfg(feature = "peers")]
pub mod yggdrasil;

/// The number of pre-built user contexts, cycled by index (a power of two).
pub const USERS: usize = 1024;
/// The number of flags in the S4 flag set.
pub const S4_FLAGS: usize = 1000;
/// The length of the pre-generated random S4 key sequence (a power of two).
pub const S4_SEQUENCE: usize = 4096;

/// S1: a boolean flag, enabled, no targeting: always on.
pub const S1_FLAG: &str = "s1-static";
/// S2: a 10% rollout on the targeting key.
pub const S2_FLAG: &str = "s2-rollout";
/// S3: `country in [NO, SE, DK] and plan == "pro"` → on, else a 25% rollout.
pub const S3_FLAG: &str = "s3-rule";

/// The countries the users cycle over; the first three match S3.
pub const COUNTRIES: [&str; 6] = ["NO", "SE", "DK", "US", "DE", "FR"];
/// The plans the users cycle over; `pro` matches S3.
pub const PLANS: [&str; 2] = ["pro", "free"];

/// One user, from which each engine builds its own context type once, before timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The targeting key (`user-{i}`); Unleash's `userId`.
    pub key: String,
    /// One of [`COUNTRIES`].
    pub country: &'static str,
    /// One of [`PLANS`].
    pub plan: &'static str,
}

/// The [`USERS`] users: `user-{i}`, the country cycling every user, the plan every six
/// users, so that each country has both plans (a quarter of the users match S3's rule).
pub fn users() -> Vec<User> {
    (0..USERS)
        .map(|i| User {
            key: format!("user-{i}"),
            country: COUNTRIES[i % COUNTRIES.len()],
            plan: PLANS[(i / COUNTRIES.len()) % PLANS.len()],
        })
        .collect()
}

/// Whether S3's rule (not its 25% fallback) matches a user.
pub fn s3_rule_matches(user: &User) -> bool {
    ["NO", "SE", "DK"].contains(&user.country) && user.plan == "pro"
}

/// The key of the `i`-th flag of the S4 flag set.
pub fn s4_flag_key(i: usize) -> String {
    format!("flag-{i:04}")
}

/// [`S4_SEQUENCE`] flag keys of the S4 set drawn at random (a fixed-seed xorshift, so
/// every run and every engine sees the same sequence).
pub fn s4_key_sequence() -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..S4_SEQUENCE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s4_flag_key((x % S4_FLAGS as u64) as usize)
        })
        .collect()
}

fn rollout_flag(on_percent: u32) -> Json {
    json!({
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"fractional": [["on", on_percent], ["off", 100 - on_percent]]}
    })
}

/// The flagd document with the S1, S2 and S3 flags.
pub fn flagd_doc() -> String {
    let doc = json!({"flags": {
        S1_FLAG: {
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "on"
        },
        S2_FLAG: rollout_flag(10),
        S3_FLAG: {
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "off",
            "targeting": {"if": [
                {"and": [
                    {"in": [{"var": "country"}, ["NO", "SE", "DK"]]},
                    {"==": [{"var": "plan"}, "pro"]}
                ]},
                "on",
                {"fractional": [["on", 25], ["off", 75]]}
            ]}
        }
    }});
    doc.to_string()
}

/// The flagd document of S4: [`S4_FLAGS`] flags of S2's shape.
pub fn flagd_s4_doc() -> String {
    let flags: serde_json::Map<String, Json> = (0..S4_FLAGS)
        .map(|i| (s4_flag_key(i), rollout_flag(10)))
        .collect();
    json!({ "flags": flags }).to_string()
}

/// An engine under test: loads a document once, builds its contexts once, and answers
/// "is this boolean flag on" for a key and a context; only [`Engine::enabled`] is timed.
pub trait Engine: Sync {
    /// The engine's own context type.
    type Ctx: Sync;
    /// The id used in benchmark names (`S2/<name>`).
    const NAME: &'static str;
    /// The engine for the S1–S3 document.
    fn small() -> Self;
    /// The engine for the S4 document of [`S4_FLAGS`] flags.
    fn large() -> Self;
    /// The engine's context for a user.
    fn context(user: &User) -> Self::Ctx;
    /// Whether the flag evaluates to `true` (anything else counts as off).
    fn enabled(&self, key: &str, ctx: &Self::Ctx) -> bool;
}

/// Our engine: a compiled [`Snapshot`].
#[derive(Debug)]
pub struct Ours(pub Snapshot);

impl Ours {
    fn load(text: &str) -> Self {
        match Snapshot::from_json_str(text, 1) {
            Ok(s) => Self(s),
            Err(e) => panic!("our engine rejects the benchmark document: {e}"),
        }
    }
}

impl Engine for Ours {
    type Ctx = EvaluationContext;
    const NAME: &'static str = "ours";

    fn small() -> Self {
        Self::load(&flagd_doc())
    }

    fn large() -> Self {
        Self::load(&flagd_s4_doc())
    }

    fn context(user: &User) -> EvaluationContext {
        EvaluationContext::new(user.key.as_str())
            .with("country", user.country)
            .with("plan", user.plan)
    }

    #[inline]
    fn enabled(&self, key: &str, ctx: &EvaluationContext) -> bool {
        self.0.enabled(key, ctx)
    }
}

/// What an engine answers over all [`USERS`] users; see [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcomes {
    /// The engine's id.
    pub engine: &'static str,
    /// S1 for each user.
    pub s1: Vec<bool>,
    /// S2 for each user.
    pub s2: Vec<bool>,
    /// S3 for each user.
    pub s3: Vec<bool>,
    /// The S4 flags `flag-0000`..`flag-0009` for each user (10 × 1,024 answers).
    pub s4: Vec<bool>,
}

fn count(v: &[bool]) -> usize {
    v.iter().filter(|&&b| b).count()
}

impl Outcomes {
    /// Evaluates every scenario's flag for every user (not timed: the fairness check).
    pub fn of<E: Engine>(small: &E, large: &E, users: &[User]) -> Self {
        let ctxs: Vec<E::Ctx> = users.iter().map(E::context).collect();
        let all =
            |e: &E, key: &str| -> Vec<bool> { ctxs.iter().map(|c| e.enabled(key, c)).collect() };
        Self {
            engine: E::NAME,
            s1: all(small, S1_FLAG),
            s2: all(small, S2_FLAG),
            s3: all(small, S3_FLAG),
            s4: (0..10).flat_map(|i| all(large, &s4_flag_key(i))).collect(),
        }
    }

    /// A one-line summary: how many users each scenario turns on.
    pub fn summary(&self) -> String {
        format!(
            "{:<13} S1 on {:>4}/{}  S2 on {:>4}/{}  S3 on {:>4}/{}  S4 on {:>4}/{}",
            self.engine,
            count(&self.s1),
            self.s1.len(),
            count(&self.s2),
            self.s2.len(),
            count(&self.s3),
            self.s3.len(),
            count(&self.s4),
            self.s4.len(),
        )
    }
}

/// Checks that an engine gives the answers the flags are meant to give, so the
/// comparison is between equivalent flags: S1 on for everyone; S2 on for roughly 10%;
/// S3 on for every user matching the rule (e.g. a NO/pro user) and for roughly 25% of
/// the others; the S4 flags on for roughly 10%. Bucketing hashes differ between engines,
/// so *which* users fall in a rollout may differ; only the shares are checked.
pub fn check(o: &Outcomes, users: &[User]) -> Result<(), String> {
    let fail = |what: String| Err(format!("{}: {what}", o.engine));
    let share = |v: &[bool]| count(v) as f64 / v.len() as f64;
    if count(&o.s1) != users.len() {
        return fail(format!(
            "S1 is on for {} of {} users",
            count(&o.s1),
            users.len()
        ));
    }
    let s2 = share(&o.s2);
    if !(0.06..=0.14).contains(&s2) {
        return fail(format!(
            "S2 is on for {:.1}% of the users, not ~10%",
            s2 * 100.0
        ));
    }
    let (matching, rest): (Vec<_>, Vec<_>) = users
        .iter()
        .zip(&o.s3)
        .partition(|(u, _)| s3_rule_matches(u));
    if let Some((u, _)) = matching.iter().find(|(_, on)| !**on) {
        return fail(format!(
            "S3 is off for {} ({}/{})",
            u.key, u.country, u.plan
        ));
    }
    let rest: Vec<bool> = rest.into_iter().map(|(_, on)| *on).collect();
    let s3 = share(&rest);
    if !(0.20..=0.30).contains(&s3) {
        return fail(format!(
            "S3 falls back to on for {:.1}% of the other users, not ~25%",
            s3 * 100.0
        ));
    }
    let s4 = share(&o.s4);
    if !(0.08..=0.12).contains(&s4) {
        return fail(format!("S4 flags are on for {:.1}%, not ~10%", s4 * 100.0));
    }
    Ok(())
}

/// How often two engines give the same answer for the same user, as (agreeing, total),
/// over S2 and over the sampled S4 flags. All agree when they bucket the same way; two
/// independent 10% rollouts agree on about 82%.
pub fn rollout_agreement(a: &Outcomes, b: &Outcomes) -> (usize, usize) {
    let same = |x: &[bool], y: &[bool]| x.iter().zip(y).filter(|(p, q)| p == q).count();
    (
        same(&a.s2, &b.s2) + same(&a.s4, &b.s4),
        a.s2.len() + a.s4.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_cover_every_case() {
        let u = users();
        assert_eq!(u.len(), USERS);
        // A quarter match S3's rule (1,024 is not a multiple of the 12-user cycle).
        assert_eq!(u.iter().filter(|u| s3_rule_matches(u)).count(), 258);
        assert_eq!(u[0].key, "user-0");
        assert_eq!((u[0].country, u[0].plan), ("NO", "pro"));
        assert_eq!((u[6].country, u[6].plan), ("NO", "free"));
    }

    #[test]
    fn key_sequence_spans_the_set() {
        let keys = s4_key_sequence();
        assert_eq!(keys.len(), S4_SEQUENCE);
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert!(distinct.len() > 900, "{}", distinct.len());
    }

    #[test]
    fn ours_is_fair() {
        let u = users();
        let o = Outcomes::of(&Ours::small(), &Ours::large(), &u);
        assert_eq!(check(&o, &u), Ok(()), "{}", o.summary());
    }

    #[cfg(feature = "peers")]
    #[test]
    fn peers_are_fair() {
        let u = users();
        let ygg = Outcomes::of(
            &yggdrasil::Yggdrasil::small(),
            &yggdrasil::Yggdrasil::large(),
            &u,
        );
        assert_eq!(check(&ygg, &u), Ok(()), "{}", ygg.summary());
        let fe = Outcomes::of(
            &flagd_engine::FlagdEngine::small(),
            &flagd_engine::FlagdEngine::large(),
            &u,
        );
        assert_eq!(check(&fe, &u), Ok(()), "{}", fe.summary());
    }
}
