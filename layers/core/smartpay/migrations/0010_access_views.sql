-- Views behind the access matrix (grants: R__grants.sql). A view runs with its owner's
-- privileges, so a role granted only the view never reads the table's PII columns.

-- PII masking, the same rule as smartpay.masking (a test compares both):
-- ID numbers and phone numbers keep their last 4 digits (phones also their +264 prefix),
-- names keep their initials.
CREATE FUNCTION smartpay_mask_digits(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
    RETURN CASE WHEN value = '' THEN value
                ELSE repeat('*', greatest(length(value) - 4, 0)) || right(value, 4) END;

CREATE FUNCTION smartpay_mask_msisdn(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
    RETURN CASE WHEN value LIKE '+264%' THEN '+264' || smartpay_mask_digits(substr(value, 5))
                ELSE smartpay_mask_digits(value) END;

CREATE FUNCTION smartpay_mask_name(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT
    RETURN CASE WHEN value = '' THEN value ELSE (
        SELECT coalesce(string_agg(left(part, 1) || repeat('*', length(part) - 1), ' ' ORDER BY n), '')
          FROM regexp_split_to_table(value, '\s+') WITH ORDINALITY AS p(part, n)
         WHERE part <> '') END;

-- What Buffr (and auditors) may see of the registry: enough to match a voucher to a wallet
-- holder by last digits, never a full ID number, phone number or name.
CREATE VIEW beneficiaries_masked AS
SELECT id,
       smartpay_mask_digits(id_number) AS id_number,
       smartpay_mask_name(first_name)  AS first_name,
       smartpay_mask_name(last_name)   AS last_name,
       smartpay_mask_msisdn(msisdn)    AS msisdn,
       region,
       programme,
       status,
       created_at,
       updated_at
  FROM beneficiaries;

-- The reconciliation report per run and programme cycle (auditors, operators' CSV export).
CREATE VIEW reconciliation_report AS
SELECT r.run_id,
       run.mode,
       run.status AS run_status,
       run.started_at,
       run.finished_at,
       v.programme,
       v.cycle,
       count(*)                                        AS checked,
       count(*) FILTER (WHERE r.match)                 AS matched,
       count(*) FILTER (WHERE r.action = 'healed')     AS healed,
       count(*) FILTER (WHERE r.action = 'flagged')    AS flagged,
       coalesce(sum(r.ketchup_amount_cents), 0)::bigint AS ketchup_amount_cents,
       coalesce(sum(r.buffr_amount_cents), 0)::bigint   AS buffr_amount_cents
  FROM reconciliation_records r
  JOIN reconciliation_runs run ON run.id = r.run_id
  JOIN vouchers v ON v.id = r.voucher_id
 GROUP BY r.run_id, run.mode, run.status, run.started_at, run.finished_at, v.programme, v.cycle;
