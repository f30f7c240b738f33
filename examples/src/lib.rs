//! Examples live in `examples/` as `[[example]]` targets; see `examples/README.md`.
