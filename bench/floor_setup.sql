-- Scratch copies of the tables one delivery writes, in the receiver's own database (so the
-- same cluster, the same WAL and the same durability settings): the pgbench floor writes
-- here and never into the receiver's tables. Same columns, defaults, identities, checks,
-- indexes, foreign key and append-only trigger as the originals.
DROP SCHEMA IF EXISTS bench_floor CASCADE;
CREATE SCHEMA bench_floor;
CREATE TABLE bench_floor.tenants (LIKE public.tenants INCLUDING ALL);
CREATE TABLE bench_floor.deliveries (LIKE public.deliveries INCLUDING ALL);
CREATE TABLE bench_floor.alerts (LIKE public.alerts INCLUDING ALL);
ALTER TABLE bench_floor.alerts
  ADD FOREIGN KEY (delivery_id) REFERENCES bench_floor.deliveries (id) ON DELETE RESTRICT;
CREATE TABLE bench_floor.audit_log (LIKE public.audit_log INCLUDING ALL);
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON bench_floor.audit_log
  FOR EACH ROW EXECUTE FUNCTION public.audit_log_append_only();
CREATE TABLE bench_floor.breakers (LIKE public.breakers INCLUDING ALL);
INSERT INTO bench_floor.tenants SELECT * FROM public.tenants;
INSERT INTO bench_floor.breakers (tenant_id) SELECT tenant_id FROM public.tenants;
ANALYZE bench_floor.tenants, bench_floor.breakers;
