-- pgbench script: the minimal durable transaction for one record-only delivery, i.e. the
-- rows the receiver writes for it (receiver/service/ingest.py): one deliveries row, one
-- alerts row, the tenants upsert, and the audit rows alert.fired and delivery.accepted.
-- Final values are written at once (the receiver also updates the delivery's counts).
\set t random(0, 999)
\set fp random(1, 9223372036854775806)
BEGIN;
INSERT INTO bench_floor.deliveries
  (receiver, status, group_key, group_labels, external_url, alert_count, truncated_alerts,
   new_alerts, changed_alerts)
VALUES ('blast-radius', 'firing',
  '{}/{isolate="false"}:{alertname="TenantErrorRatioHigh", tenant_id="tenant-' || :t || '"}',
  jsonb_build_object('alertname', 'TenantErrorRatioHigh', 'tenant_id', 'tenant-' || :t),
  'http://alertmanager.bench:9093', 1, 0, 1, 0)
RETURNING id AS delivery_id \gset
INSERT INTO bench_floor.alerts
  (fingerprint, starts_at, ends_at, status, tenant_id, alertname, labels, annotations,
   generator_url, isolating, platform, delivery_id, resolved_seen_at)
VALUES (lpad(to_hex(:fp::bigint), 16, '0'), now(), NULL, 'firing', 'tenant-' || :t,
  'TenantErrorRatioHigh',
  jsonb_build_object('alertname', 'TenantErrorRatioHigh', 'severity', 'warning',
                     'tenant_id', 'tenant-' || :t),
  '{"summary": "error ratio over 5 percent for 5m"}',
  'http://prometheus.bench:9090/graph?g0.expr=tenant%3Arag_errors%3Aratio_rate5m+%3E+0.05',
  false, false, :delivery_id, NULL);
INSERT INTO bench_floor.tenants (tenant_id) VALUES ('tenant-' || :t)
  ON CONFLICT (tenant_id) DO NOTHING;
INSERT INTO bench_floor.audit_log (actor, action, tenant_id, delivery_id, details) VALUES
  ('alertmanager', 'alert.fired', 'tenant-' || :t, :delivery_id,
   jsonb_build_object('fingerprint', lpad(to_hex(:fp::bigint), 16, '0'), 'startsAt', now(),
                      'alertname', 'TenantErrorRatioHigh')),
  ('alertmanager', 'delivery.accepted', NULL, :delivery_id,
   jsonb_build_object('alerts', 1, 'truncated', 0, 'groupKey', 'g', 'receiver', 'blast-radius',
                      'status', 'firing', 'new', 1, 'changed', 0, 'duplicates', 0));
COMMIT;
