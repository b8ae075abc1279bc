-- pgbench script: one isolating delivery that trips a breaker, as the receiver's design
-- does it: the mass-isolation guard's advisory lock (held to commit, so trips are
-- serialised across the platform), the record-only rows, the breaker row locked and
-- updated, its breaker.transition audit row, and the NOTIFY replicas listen to.
\set t random(0, 999)
\set fp random(1, 9223372036854775806)
BEGIN;
SELECT pg_advisory_xact_lock(7262022);
INSERT INTO bench_floor.deliveries
  (receiver, status, group_key, group_labels, external_url, alert_count, truncated_alerts,
   new_alerts, changed_alerts)
VALUES ('blast-radius', 'firing',
  '{}/{isolate="true"}:{alertname="TenantErrorRatioHigh", tenant_id="tenant-' || :t || '"}',
  jsonb_build_object('alertname', 'TenantErrorRatioHigh', 'tenant_id', 'tenant-' || :t),
  'http://alertmanager.bench:9093', 1, 0, 1, 0)
RETURNING id AS delivery_id \gset
INSERT INTO bench_floor.alerts
  (fingerprint, starts_at, ends_at, status, tenant_id, alertname, labels, annotations,
   generator_url, isolating, platform, delivery_id, resolved_seen_at)
VALUES (lpad(to_hex(:fp::bigint), 16, '0'), now(), NULL, 'firing', 'tenant-' || :t,
  'TenantErrorRatioHigh',
  jsonb_build_object('alertname', 'TenantErrorRatioHigh', 'isolate', 'true',
                     'severity', 'critical', 'tenant_id', 'tenant-' || :t),
  '{"summary": "error ratio over 5 percent for 5m"}',
  'http://prometheus.bench:9090/graph?g0.expr=tenant%3Arag_errors%3Aratio_rate5m+%3E+0.05',
  true, false, :delivery_id, NULL);
INSERT INTO bench_floor.tenants (tenant_id) VALUES ('tenant-' || :t)
  ON CONFLICT (tenant_id) DO NOTHING;
UPDATE bench_floor.breakers
  SET state = 'open', opened_at = now(), trips = trips + 1, streak = streak + 1,
      alert_firing = true, changed_at = now(), next_check_at = now() + interval '1 hour',
      version = version + 1, updated_at = now()
  WHERE tenant_id = 'tenant-' || :t
  RETURNING version \gset
INSERT INTO bench_floor.audit_log (actor, action, tenant_id, delivery_id, details) VALUES
  ('alertmanager', 'alert.fired', 'tenant-' || :t, :delivery_id,
   jsonb_build_object('fingerprint', lpad(to_hex(:fp::bigint), 16, '0'), 'startsAt', now(),
                      'alertname', 'TenantErrorRatioHigh')),
  ('alertmanager', 'breaker.transition', 'tenant-' || :t, :delivery_id,
   jsonb_build_object('from', 'closed', 'to', 'open', 'reason', 'isolating alert fired',
                      'at', now(), 'trips', 1, 'streak', 1)),
  ('alertmanager', 'delivery.accepted', NULL, :delivery_id,
   jsonb_build_object('alerts', 1, 'truncated', 0, 'groupKey', 'g', 'receiver', 'blast-radius',
                      'status', 'firing', 'new', 1, 'changed', 0, 'duplicates', 0));
SELECT pg_notify('bench_floor', jsonb_build_object('version', :version::bigint,
  'tenant_id', 'tenant-' || :t, 'state', 'open', 'opened_at', now())::text);
COMMIT;
