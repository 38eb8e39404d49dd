-- The plan of a sandbox estate: who the tenants, users and APIs are.
--
-- Run at the start of both fill sessions (API-M DB and shared DB) so that the two
-- databases agree on tenants, users and APIs without passing data between them. Every
-- object here is temporary (pg_temp), so nothing of the plan stays in the estate.
--
-- Input: the session setting sandbox.scale (an integer >= 1).
-- Temp tables get no statistics from autovacuum, so each is ANALYZEd right after it is
-- made: without statistics the planner joins the million-row token series by nested loop.
-- Determinism: values derive from md5() of a label and a series number, never
-- random(), and times from a fixed "now" (sb_t0), so a scale always gives the same data.

-- A 32-bit number from a label: the deterministic replacement for random().
create function pg_temp.sb_h(text) returns bigint
    language sql immutable
    as $$ select ('x' || substr(md5($1), 1, 8))::bit(32)::bigint $$;

-- A UUID-formatted string from a label.
create function pg_temp.sb_uuid(text) returns text
    language sql immutable
    as $$ select md5($1)::uuid::text $$;

-- A key/secret-looking string (base64 alphabet, no padding) of up to 40 characters.
create function pg_temp.sb_key(text, integer) returns text
    language sql immutable
    as $$ select substr(translate(encode(decode(md5($1) || md5($1 || '#'), 'hex'), 'base64'),
                                  '+/=', 'xYz'), 1, $2) $$;

-- The estate's "now": fixed so that reruns give identical timestamps.
create function pg_temp.sb_t0() returns timestamp
    language sql immutable
    as $$ select timestamp '2024-06-01 09:00:00' $$;

create temp table sb_param as
select s                 as scale,
       3 + s / 10        as n_tenants,   -- tenants besides carbon.super
       30 * s            as n_users,     -- regular users (each tenant also has an admin)
       20 * s            as n_apis,
       50 * s            as n_apps,
       10000 * s         as n_tokens
from (select current_setting('sandbox.scale')::integer as s) as p;
analyze sb_param;

-- idx 0 is the super tenant.
create temp table sb_tenant as
select idx,
       case when idx = 0 then -1234 else idx end as tenant_id,
       case when idx = 0 then 'carbon.super'
            else (array['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark', 'wayne',
                        'wonka', 'cyberdyne', 'tyrell', 'oscorp', 'soylent'])[1 + (idx - 1) % 12]
                 || case when idx > 12 then ((idx - 1) / 12)::text else '' end || '.com'
       end as domain
from sb_param, generate_series(0, n_tenants) as idx;
analyze sb_tenant;

-- Users: one admin per tenant (um_id = idx + 1), then the regular users; about 60 %
-- live in the super tenant. login is the name API-M uses (user@tenant outside carbon.super).
create temp table sb_user as
with raw as (
    select t.idx + 1 as um_id, t.idx as tenant_idx, 'admin'::text as username,
           true as is_admin, true as is_publisher
    from sb_tenant t
    union all
    select p.n_tenants + 1 + u,
           case when pg_temp.sb_h('user-tenant-' || u) % 100 < 60 then 0
                else 1 + (pg_temp.sb_h('user-tenant-b-' || u) % p.n_tenants)::integer end,
           (array['maria', 'james', 'aiko', 'omar', 'lena', 'ravi', 'sofia', 'chen', 'nadia',
                  'tom', 'ines', 'kwame', 'elena', 'yusuf', 'hana', 'luca', 'priya', 'oscar',
                  'mei', 'david'])[1 + pg_temp.sb_h('first-' || u) % 20]
           || '.' ||
           (array['garcia', 'smith', 'tanaka', 'haddad', 'novak', 'patel', 'rossi', 'wang',
                  'karimi', 'berg', 'silva', 'mensah', 'popova', 'demir', 'kim', 'bianchi',
                  'iyer', 'lund', 'zhou', 'cohen'])[1 + pg_temp.sb_h('last-' || u) % 20]
           || u,
           false,
           pg_temp.sb_h('publisher-' || u) % 8 = 0
    from sb_param p, generate_series(1, p.n_users) as u
)
select r.*, t.tenant_id, t.domain,
       case when t.idx = 0 then r.username else r.username || '@' || t.domain end as login,
       r.username || '@' || case when t.idx = 0 then 'example.com' else t.domain end as email,
       pg_temp.sb_uuid('um-user-' || r.um_id) as user_uuid,
       row_number() over (partition by r.tenant_idx order by r.um_id) as rn_in_tenant,
       count(*) over (partition by r.tenant_idx) as users_in_tenant
from raw r join sb_tenant t on t.idx = r.tenant_idx;
analyze sb_user;

create temp table sb_publisher as
select tenant_idx, username, login,
       row_number() over (partition by tenant_idx order by um_id) as rn,
       count(*) over (partition by tenant_idx) as cnt
from sb_user where is_publisher;
analyze sb_publisher;

-- APIs: every fifth API is version 2.0.0 of the API before it (same provider and name).
-- About 3 % get a deliberately invalid OpenAPI document (invalid_kind not null).
create temp table sb_api as
with base as (
    select n, case when n % 5 = 0 then n - 1 else n end as fam
    from sb_param, generate_series(1, n_apis) as n
), placed as (
    select b.n, b.fam,
           case when pg_temp.sb_h('api-tenant-' || b.fam) % 100 < 60 then 0
                else 1 + (pg_temp.sb_h('api-tenant-b-' || b.fam) % p.n_tenants)::integer end
               as tenant_idx,
           (array['Weather', 'Payments', 'Orders', 'Inventory', 'Shipping', 'Customers',
                  'Billing', 'Catalog', 'Loyalty', 'Notifications', 'Pricing', 'Reviews',
                  'Booking', 'Claims', 'Accounts', 'Fleet', 'Telemetry', 'Tickets',
                  'Invoices', 'Quotes', 'Stores', 'Menu', 'Devices', 'Reports'])
               [1 + b.fam % 24] as noun
    from base b, sb_param p
)
select pl.n as api_id, pl.fam, pl.tenant_idx, t.tenant_id, t.domain,
       pub.login as provider,
       replace(pub.login, '@', '-AT-') as reg_provider,   -- how the registry spells it
       pub.username as provider_user,
       pl.noun || 'API' || pl.fam as name,
       case when pl.n % 5 = 0 then '2.0.0' else '1.0.0' end as version,
       case when pl.tenant_idx = 0 then '' else '/t/' || t.domain end
           || '/' || lower(pl.noun) || pl.fam as context_root,
       lower(pl.noun) as resource_root,
       pg_temp.sb_uuid('api-' || pl.n) as uuid,
       case when pg_temp.sb_h('api-status-' || pl.n) % 100 < 70 then 'PUBLISHED'
            when pg_temp.sb_h('api-status-' || pl.n) % 100 < 82 then 'CREATED'
            when pg_temp.sb_h('api-status-' || pl.n) % 100 < 87 then 'PROTOTYPED'
            when pg_temp.sb_h('api-status-' || pl.n) % 100 < 94 then 'DEPRECATED'
            when pg_temp.sb_h('api-status-' || pl.n) % 100 < 97 then 'BLOCKED'
            else 'RETIRED' end as status,
       3 + (pg_temp.sb_h('api-res-' || pl.n) % 4)::integer as n_res,
       case pl.n % 100 when 5 then 'missing-info'
                       when 17 then 'broken-json'
                       when 29 then 'paths-not-object' end as invalid_kind,
       pg_temp.sb_t0() - make_interval(days => 30 + (pg_temp.sb_h('api-age-' || pl.n) % 700)::integer)
           as created_time
from placed pl
join sb_tenant t on t.idx = pl.tenant_idx
join sb_publisher pub
  on pub.tenant_idx = pl.tenant_idx
 and pub.rn = 1 + pg_temp.sb_h('api-provider-' || pl.fam) % pub.cnt;
analyze sb_api;

-- Resources (verb + URL template) of each API, numbered 1..n_res.
create temp table sb_resource as
select a.api_id, r.r,
       (array['GET', 'POST', 'GET', 'PUT', 'DELETE', 'GET'])[r.r] as http_method,
       '/' || a.resource_root
           || (array['', '', '/{id}', '/{id}', '/{id}', '/{id}/history'])[r.r] as url_pattern
from sb_api a cross join lateral generate_series(1, a.n_res) as r(r);
analyze sb_resource;
