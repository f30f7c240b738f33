-- Replicas on one store share their fleets: each replica writes, per environment, the
-- SDK instances connected to it (a JSON array, rewritten when it changes and at least
-- every second), so that any replica answers the fleet of the whole deployment. A
-- report that stopped being refreshed is a replica that is gone: its instances are
-- unreachable, never converged.
CREATE TABLE fleet_reports (
    replica     TEXT   NOT NULL,
    environment TEXT   NOT NULL,
    instances   TEXT   NOT NULL,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (replica, environment)
);
-- An operator forgot an instance (it is known to be gone) through any replica: every
-- replica stops listing entries of it made before that moment.
CREATE TABLE fleet_forgets (
    environment  TEXT   NOT NULL,
    instance     TEXT   NOT NULL,
    forgotten_at BIGINT NOT NULL,
    PRIMARY KEY (environment, instance)
);
