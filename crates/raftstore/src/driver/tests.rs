#![allow(clippy::unwrap_used)]

use super::*;
use crate::engine::{Engine, CF_SM};

#[test]
fn write_earlier_writes_the_round_so_far_with_the_entry_before() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = WriteBatch::default();
    batch.put_cf(engine.cf(CF_SM).unwrap(), b"k", b"v");
    let mut ctx = ApplyCtx::new(5, 2, &mut batch, &engine, (4, 2));
    ctx.write_earlier().unwrap();
    assert!(batch.is_empty());
    assert_eq!(engine.apply_state().unwrap(), (4, 2));
}

#[test]
#[should_panic(expected = "proposed in a shared entry")]
fn write_earlier_inside_a_shared_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let mut batch = WriteBatch::default();
    batch.put_cf(engine.cf(CF_SM).unwrap(), b"k", b"v");
    let mut ctx = ApplyCtx::new(5, 2, &mut batch, &engine, (4, 2)).at_position(1);
    let _ = ctx.write_earlier();
}
