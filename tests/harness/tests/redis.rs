//! The Redis harness itself: a real server answers, keeps what it is given, and comes
//! back empty after a kill, on the same port.

use flagd_harness::Redis;

#[test]
fn a_killed_redis_comes_back_empty_on_the_same_port() {
    let Some(redis) = Redis::start_or_skip("the Redis harness is not tested") else {
        return;
    };
    assert!(redis.url().starts_with("redis://127.0.0.1:"));
    assert_eq!(redis.command(&["SET", "flagd:test", "1"]).unwrap(), "+OK");
    assert_eq!(redis.command(&["EXISTS", "flagd:test"]).unwrap(), ":1");
    redis.kill();
    assert!(
        redis.command(&["PING"]).is_err(),
        "a killed Redis answers nothing"
    );
    redis.resume().unwrap();
    assert_eq!(redis.command(&["EXISTS", "flagd:test"]).unwrap(), ":0");
}
