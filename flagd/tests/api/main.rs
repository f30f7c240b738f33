//! Integration tests over real HTTP against real flagd servers, each on a real SQLite
//! file and on a real PostgreSQL server started here. A custom harness
//! (`flagd_harness::run_trials`, libtest-mimic) so that PostgreSQL starts once and is
//! stopped at the end.

mod alerts;
mod approvals;
mod authz;
mod concurrency;
mod flows;
mod grpc;
mod limits;
mod metrics;
mod notify;
mod ofrep;
mod people;
mod plans;
mod schedules;
mod stream;
mod support;
mod triggers;
mod ui;
mod undo;

use flagd_harness::BackendTest as TestFn;

/// Tests that run on both backends.
const BOTH: &[(&str, TestFn)] = &[
    ("flag_lifecycle_toggle_rollout_diff_revert", |b| {
        Box::pin(flows::lifecycle(b))
    }),
    ("single_flag_restore", |b| {
        Box::pin(flows::single_flag_restore(b))
    }),
    ("import_and_revert_write_only_what_differs", |b| {
        Box::pin(flows::import_and_revert(b))
    }),
    ("stale_if_match_is_refused", |b| {
        Box::pin(flows::stale_if_match(b))
    }),
    ("invalid_input_gets_clear_errors", |b| {
        Box::pin(flows::errors(b))
    }),
    ("environments", |b| Box::pin(flows::environments(b))),
    ("tokens_and_revocation", |b| Box::pin(flows::tokens(b))),
    ("audit_log_filters", |b| Box::pin(flows::audit_filters(b))),
    ("concurrent_writers", |b| {
        Box::pin(concurrency::fifty_writers(b))
    }),
    ("live_push_to_sdks", |b| Box::pin(stream::push(b))),
    ("large_revert_is_announced_and_recorded", |b| {
        Box::pin(stream::large_revert(b))
    }),
    ("stalled_client_does_not_delay_others", |b| {
        Box::pin(stream::stalled_client(b))
    }),
    ("ofrep_evaluation", |b| Box::pin(ofrep::evaluation(b))),
    ("grpc_sync_and_event_streams", |b| {
        Box::pin(grpc::sync_and_events(b))
    }),
    ("grpc_evaluation_matches_ofrep", |b| {
        Box::pin(grpc::evaluation_matches_ofrep(b))
    }),
    ("metrics_after_a_scripted_session", |b| {
        Box::pin(metrics::scripted_session(b))
    }),
    ("ui_sessions_and_csrf", |b| {
        Box::pin(ui::sessions_and_csrf(b))
    }),
    ("ui_live_events", |b| Box::pin(ui::live_events(b))),
    ("approvals_alerts_and_triggers_break_glass", |b| {
        Box::pin(alerts::alerts_and_triggers_break_glass(b))
    }),
    ("approvals_are_announced", |b| {
        Box::pin(notify::change_requests_are_announced(b))
    }),
    ("approvals_change_requests_and_break_glass", |b| {
        Box::pin(approvals::change_requests_and_break_glass(b))
    }),
    ("people_identity_provider_down", |b| {
        Box::pin(people::provider_down(b))
    }),
    ("people_accounts_and_passwords", |b| {
        Box::pin(people::accounts_and_passwords(b))
    }),
    ("ui_flag_summaries_and_preview", |b| {
        Box::pin(ui::summaries_and_preview(b))
    }),
    ("keys_and_nesting_are_limited_on_write", |b| {
        Box::pin(limits::keys_and_depth(b))
    }),
    ("fleet_remembers_unreachable_instances", |b| {
        Box::pin(limits::fleet_memory(b))
    }),
    (
        "a_flag_is_at_most_1_mib_and_a_toggle_records_its_state",
        |b| Box::pin(limits::flag_size(b)),
    ),
    ("store_identity_resets_other_histories", |b| {
        Box::pin(limits::store_identity(b))
    }),
    ("undo_one_change", |b| Box::pin(undo::undo_one_change(b))),
    ("per_flag_guard", |b| Box::pin(undo::per_flag_guard(b))),
    ("trigger_urls", |b| Box::pin(triggers::trigger_urls(b))),
    ("alertmanager_kills_flags", |b| {
        Box::pin(alerts::alertmanager_kills_flags(b))
    }),
    ("alert_policy_and_last_good", |b| {
        Box::pin(alerts::alert_policy_and_last_good(b))
    }),
    ("notifications_to_every_vendor", |b| {
        Box::pin(notify::every_vendor(b))
    }),
    ("notification_of_a_large_revert_is_one_message", |b| {
        Box::pin(notify::large_revert_is_one_message(b))
    }),
    ("notifications_are_retried", |b| {
        Box::pin(notify::retries(b))
    }),
    ("notification_outbox_survives_a_restart", |b| {
        Box::pin(notify::outbox_survives_a_restart(b))
    }),
    ("notification_follow_up_counts_the_fleet", |b| {
        Box::pin(notify::follow_up_counts_the_fleet(b))
    }),
    ("notification_follow_up_names_the_laggards", |b| {
        Box::pin(notify::follow_up_names_the_laggards(b))
    }),
    ("release_plan_ramps_and_completes", |b| {
        Box::pin(plans::ramps_and_completes(b))
    }),
    ("release_plans_are_paused_by_responders", |b| {
        Box::pin(plans::responders_pause_plans(b))
    }),
    ("release_plan_survives_a_restart_and_rolls_back", |b| {
        Box::pin(plans::survives_restart_and_rolls_back(b))
    }),
    ("bad_release_plans_are_refused", |b| {
        Box::pin(plans::bad_plans_are_refused(b))
    }),
    ("scheduled_changes_apply_at_their_time", |b| {
        Box::pin(schedules::apply_at_their_time(b))
    }),
    ("scheduled_changes_fail_visibly_when_moved", |b| {
        Box::pin(schedules::fail_visibly_when_moved(b))
    }),
    ("scheduled_changes_survive_a_restart_and_cancel", |b| {
        Box::pin(schedules::survive_a_restart_and_cancel(b))
    }),
    ("bad_scheduled_changes_are_refused", |b| {
        Box::pin(schedules::bad_schedules_are_refused(b))
    }),
];

/// Tests whose subject does not depend on the store.
const SQLITE_ONLY: &[(&str, TestFn)] = &[
    // 100,000 flags: the limit logic is the store's running count, the same code on
    // both backends (the first write of every test computes the count in SQL).
    ("flag_count_is_limited_and_kill_switch_is_not", |b| {
        Box::pin(limits::flag_count(b))
    }),
    ("authorization_matrix", |b| Box::pin(authz::matrix(b))),
    ("limited_admins_stay_within_their_environments", |b| {
        Box::pin(authz::limited_admin(b))
    }),
    ("body_limit", |b| Box::pin(flows::body_limit(b))),
    // The guard is the same code whatever the store.
    ("notifications_to_private_addresses_are_refused", |b| {
        Box::pin(notify::private_addresses_are_refused(b))
    }),
    ("ofrep_cors", |b| Box::pin(ofrep::cors(b))),
    // Keys, selectors and limits are checked before the store is asked.
    ("grpc_keys_selectors_limits_and_shutdown", |b| {
        Box::pin(grpc::keys_selectors_limits_and_shutdown(b))
    }),
    ("ui_files_and_security_headers", |b| {
        Box::pin(ui::files_and_headers(b))
    }),
];

fn main() {
    flagd_harness::run_trials(BOTH, SQLITE_ONLY, &[])
}
