//! Large loads on the machine's cores: a 10,000-flag document is read and compiled in
//! parts, one per core, so that an SDK starting from such a file (or its cache file)
//! serves its first evaluation sooner (benchmarks.md section 9). Small documents stay
//! on the calling thread: starting threads costs more than they save.

use serde_json::Value;
use serde_json::value::RawValue;

/// The machine's cores, asked once.
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

thread_local! {
    static ONE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every load it makes on the calling thread only: for code that must not
/// start threads, or that counts what the calling thread allocates.
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ONE_THREAD.with(|o| o.set(self.0));
        }
    }
    let _reset = Reset(ONE_THREAD.with(|o| o.replace(true)));
    f()
}

/// Whether loads may use other threads here: several cores, and not inside
/// [`on_this_thread`].
fn may_split() -> bool {
    cores() > 1 && !ONE_THREAD.with(std::cell::Cell::get)
}

/// How many parts `n` items are worth splitting into, given that a part below `least`
/// items is not worth a thread.
pub(crate) fn parts(n: usize, least: usize) -> usize {
    if !may_split() {
        return 1;
    }
    cores().min(n / least.max(1)).max(1)
}

/// Runs `work` on each of `parts` contiguous parts of `items` (on as many threads, the
/// first on the calling one) and returns the results in order.
pub(crate) fn map_parts<T: Sync, R: Send>(
    items: &[T],
    parts: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    if parts <= 1 || items.len() < 2 {
        return vec![work(items)];
    }
    let size = items.len().div_ceil(parts);
    std::thread::scope(|scope| {
        let mut chunks = items.chunks(size);
        let first = chunks.next().unwrap_or_default();
        let work = &work;
        let others: Vec<_> = chunks.map(|c| scope.spawn(move || work(c))).collect();
        let mut out = vec![work(first)];
        for w in others {
            match w.join() {
                Ok(r) => out.push(r),
                // The work never panics (the fuzz targets hold compiling and reading to
                // that); should it, the caller fails as it would on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// Below this many bytes an object is parsed on one thread.
const PARALLEL_BYTES: usize = 256 * 1024;

/// Parses JSON text as [`crate::limits::from_slice_deep`] into a [`Value`] does, with
/// the same result. A large object's members are parsed on the machine's cores (a
/// member that is itself large, such as `flags`, in parts of its own). `None` when the
/// text is not valid JSON, or not a large object: the caller parses it whole, and so
/// reports any error as a whole parse does.
pub(crate) fn parse_large(text: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(text).ok()?;
    if text.len() < PARALLEL_BYTES || !may_split() {
        return None;
    }
    parse_object(text)
}

fn parse_object(text: &str) -> Option<Value> {
    let members = members_of(text)?;
    let sizes: usize = members.iter().map(|(_, r)| r.get().len()).sum();
    let parts = parts(sizes, PARALLEL_BYTES / 4).min(members.len());
    let parsed = map_parts(&members, parts, |part| {
        part.iter()
            .map(|(_, raw)| {
                let raw = raw.get();
                match raw.len() >= PARALLEL_BYTES && raw.starts_with('{') {
                    true => parse_object(raw),
                    false => parse_one(raw),
                }
            })
            .collect::<Option<Vec<Value>>>()
    });
    let values: Vec<Value> = parsed
        .into_iter()
        .collect::<Option<Vec<Vec<Value>>>>()?
        .into_iter()
        .flatten()
        .collect();
    let mut map = serde_json::Map::with_capacity(members.len());
    // Each key once already (first place, last value), as serde_json builds a map.
    for (value, (key, _)) in values.into_iter().zip(members) {
        map.insert(key, value);
    }
    Some(Value::Object(map))
}

/// Parses JSON text whose depth the caller checked.
pub(crate) fn parse_one(text: &str) -> Option<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let v = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(v)
}

/// An object's members, unparsed, each key once (first place, last value).
pub(crate) fn members_of(text: &str) -> Option<Vec<(String, &RawValue)>> {
    struct Members<'de>(std::marker::PhantomData<&'de ()>);
    impl<'de> serde::de::Visitor<'de> for Members<'de> {
        type Value = indexmap::IndexMap<String, &'de RawValue>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = indexmap::IndexMap::with_capacity(m.size_hint().unwrap_or(0));
            while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    // The caller checked the depth of the whole text.
    de.disable_recursion_limit();
    let members =
        serde::Deserializer::deserialize_map(&mut de, Members(std::marker::PhantomData)).ok()?;
    de.end().ok()?;
    Some(members.into_iter().collect())
}
