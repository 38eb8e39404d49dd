-- Fill the API-M DB (WSO2AM_DB): throttling tiers, key managers, subscribers, APIs,
-- applications, subscriptions, OAuth consumer apps and access tokens.
--
-- Runs after plan.sql in the same session. Set-based only (INSERT ... SELECT over the
-- plan tables and generate_series), so memory does not grow with scale. Only columns
-- present in both the genuine 4.0.0 DDL and the compact schema are named; NOT NULL
-- columns of the genuine DDL always get a value.

------------------------------------------------------------------------------
-- Per-tenant defaults: throttling tiers and the Resident Key Manager
------------------------------------------------------------------------------

insert into am_policy_subscription (policy_id, name, display_name, tenant_id, description,
                                    quota_type, quota, quota_unit, unit_time, time_unit,
                                    is_deployed, stop_on_quota_reach, billing_plan, uuid,
                                    max_complexity, max_depth, connections_count)
select t.idx * 5 + p.o, p.name, p.name, t.tenant_id,
       'Allows ' || p.quota || ' requests per minute', 'requestCount', p.quota, null, 1, 'min',
       true, true, 'FREE', pg_temp.sb_uuid('sub-policy-' || t.idx || '-' || p.name), 0, 0, 0
from sb_tenant t
cross join (values (1, 'Gold', 5000), (2, 'Silver', 2000), (3, 'Bronze', 1000),
                   (4, 'Unauthenticated', 500), (5, 'Unlimited', 2147483647)) as p(o, name, quota);

insert into am_policy_application (policy_id, name, display_name, tenant_id, description,
                                   quota_type, quota, quota_unit, unit_time, time_unit,
                                   is_deployed, uuid)
select t.idx * 4 + p.o, p.name, p.name, t.tenant_id,
       'Allows ' || p.quota || ' requests per minute', 'requestCount', p.quota, null, 1, 'min',
       true, pg_temp.sb_uuid('app-policy-' || t.idx || '-' || p.name)
from sb_tenant t
cross join (values (1, '10PerMin', 10), (2, '20PerMin', 20), (3, '50PerMin', 50),
                   (4, 'Unlimited', 2147483647)) as p(o, name, quota);

insert into am_api_throttle_policy (policy_id, name, display_name, tenant_id, description,
                                    default_quota_type, default_quota, default_quota_unit,
                                    default_unit_time, default_time_unit, applicable_level,
                                    is_deployed, uuid)
select t.idx * 4 + p.o, p.name, p.name, t.tenant_id,
       'Allows ' || p.quota || ' requests per minute', 'requestCount', p.quota, null, 1, 'min',
       'apiLevel', true, pg_temp.sb_uuid('api-policy-' || t.idx || '-' || p.name)
from sb_tenant t
cross join (values (1, '10KPerMin', 10000), (2, '20KPerMin', 20000), (3, '50KPerMin', 50000),
                   (4, 'Unlimited', 2147483647)) as p(o, name, quota);

insert into am_key_manager (uuid, name, display_name, description, type, configuration,
                            enabled, tenant_domain)
select pg_temp.sb_uuid('key-manager-' || t.idx), 'Resident Key Manager', 'Resident Key Manager',
       'This is Resident Key Manager', 'default',
       convert_to(json_build_object(
           'issuer', 'https://localhost:9443/oauth2/token',
           'token_endpoint', 'https://localhost:9443/oauth2/token',
           'revoke_endpoint', 'https://localhost:9443/oauth2/revoke',
           'enable_token_generation', true, 'enable_oauth_app_creation', true,
           'grant_types', json_build_array('client_credentials', 'password', 'refresh_token',
                                           'authorization_code'))::text, 'UTF8'),
       true, t.domain
from sb_tenant t;

------------------------------------------------------------------------------
-- Subscribers and APIs
------------------------------------------------------------------------------

-- Every user has signed in to the Developer Portal once, so every user is a subscriber.
insert into am_subscriber (subscriber_id, user_id, tenant_id, email_address, date_subscribed,
                           created_by, created_time, updated_by, updated_time)
select u.um_id, u.login, u.tenant_id, u.email,
       pg_temp.sb_t0() - make_interval(days => 60 + (pg_temp.sb_h('subscriber-' || u.um_id) % 800)::integer),
       u.login, pg_temp.sb_t0() - make_interval(days => 60 + (pg_temp.sb_h('subscriber-' || u.um_id) % 800)::integer),
       null, null
from sb_user u;

-- Published (and later) APIs have one revision deployed to the Default gateway.
alter table sb_api add column revision_uuid text;
update sb_api set revision_uuid = pg_temp.sb_uuid('revision-' || api_id)
where status in ('PUBLISHED', 'DEPRECATED', 'BLOCKED', 'PROTOTYPED');

insert into am_api (api_id, api_uuid, api_provider, api_name, api_version, context,
                    context_template, api_tier, api_type, created_by, created_time, updated_by,
                    updated_time, status, revisions_created)
select a.api_id, a.uuid, a.provider, a.name, a.version, a.context_root || '/' || a.version,
       a.context_root || '/{version}', null, 'HTTP', a.provider, a.created_time, a.provider,
       a.created_time + interval '2 days', a.status,
       case when a.revision_uuid is null then 0 else 1 end
from sb_api a;

insert into am_api_url_mapping (url_mapping_id, api_id, http_method, auth_scheme, url_pattern,
                                throttling_tier, mediation_script, revision_uuid)
select row_number() over (order by m.rev is not null, m.api_id, m.r), m.api_id, m.http_method,
       'Any', m.url_pattern, 'Unlimited', null, m.rev
from (
    select s.api_id, s.r, s.http_method, s.url_pattern, null::text as rev from sb_resource s
    union all
    select s.api_id, s.r, s.http_method, s.url_pattern, a.revision_uuid
    from sb_resource s join sb_api a on a.api_id = s.api_id
    where a.revision_uuid is not null
) as m;

insert into am_revision (id, api_uuid, revision_uuid, description, created_time, created_by)
select 1, a.uuid, a.revision_uuid, 'Initial revision', a.created_time + interval '1 day', a.provider
from sb_api a where a.revision_uuid is not null;

insert into am_deployment_revision_mapping (name, vhost, revision_uuid, display_on_devportal,
                                            deployed_time)
select 'Default', 'localhost', a.revision_uuid, true, a.created_time + interval '1 day'
from sb_api a where a.revision_uuid is not null;

insert into am_api_lc_event (event_id, api_id, previous_state, new_state, user_id, tenant_id,
                             event_date)
select row_number() over (order by e.api_id, e.step), e.api_id, e.prev, e.next, e.usr,
       e.tenant_id, e.at
from (
    select a.api_id, 1 as step, null::text as prev, 'CREATED'::text as next, a.provider as usr,
           a.tenant_id, a.created_time as at
    from sb_api a
    union all
    select a.api_id, 2, 'CREATED',
           case when a.status = 'PROTOTYPED' then 'PROTOTYPED' else 'PUBLISHED' end,
           a.provider, a.tenant_id, a.created_time + interval '1 day'
    from sb_api a where a.status <> 'CREATED'
    union all
    select a.api_id, 3, 'PUBLISHED', a.status, a.provider, a.tenant_id,
           a.created_time + interval '20 days'
    from sb_api a where a.status in ('DEPRECATED', 'BLOCKED', 'RETIRED')
) as e;

-- The newest version is the default version of an API that has two.
insert into am_api_default_version (default_version_id, api_name, api_provider,
                                    default_api_version, published_default_api_version)
select row_number() over (order by a.api_id), a.name, a.provider, a.version,
       case when a.status = 'PUBLISHED' then a.version end
from sb_api a where a.version = '2.0.0';

------------------------------------------------------------------------------
-- Applications, subscriptions and keys
------------------------------------------------------------------------------

create temp table sb_app as
select a as application_id, u.um_id as subscriber_id, u.tenant_idx, u.tenant_id, u.domain,
       u.username, u.login,
       (array['Mobile', 'Web', 'Partner', 'Kiosk', 'Backoffice', 'Analytics', 'Checkout',
              'Tracker'])[1 + pg_temp.sb_h('app-name-' || a) % 8] || 'App' || a as name,
       pg_temp.sb_uuid('application-' || a) as uuid,
       pg_temp.sb_t0() - make_interval(days => 5 + (pg_temp.sb_h('app-age-' || a) % 600)::integer)
           as created_time
from sb_param p
cross join generate_series(1, p.n_apps) as a
join sb_user u on u.um_id = p.n_tenants + 1 + 1 + pg_temp.sb_h('app-owner-' || a) % p.n_users;
analyze sb_app;

insert into am_application (application_id, name, subscriber_id, application_tier,
                            callback_url, description, application_status, group_id,
                            created_by, created_time, updated_by, updated_time, uuid, token_type)
select a.application_id, a.name, a.subscriber_id,
       (array['Unlimited', '10PerMin', '20PerMin', '50PerMin'])[1 + pg_temp.sb_h('app-tier-' || a.application_id) % 4],
       case when a.application_id % 7 = 0 then 'https://' || lower(a.name) || '.example.com/callback' end,
       'Sandbox application ' || a.name,
       case when pg_temp.sb_h('app-status-' || a.application_id) % 50 = 0 then 'CREATED' else 'APPROVED' end,
       '', a.login, a.created_time, a.login, a.created_time + interval '1 day', a.uuid,
       case when pg_temp.sb_h('app-token-type-' || a.application_id) % 100 < 85 then 'JWT' else 'OAUTH' end
from sb_app a;

-- Each application subscribes to up to four distinct subscribable APIs of its tenant.
create temp table sb_subscribable as
select a.api_id, a.tenant_idx,
       row_number() over (partition by a.tenant_idx order by a.api_id) as rn,
       count(*) over (partition by a.tenant_idx) as cnt
from sb_api a where a.status in ('PUBLISHED', 'DEPRECATED', 'BLOCKED');
analyze sb_subscribable;

insert into am_subscription (subscription_id, tier_id, tier_id_pending, api_id, last_accessed,
                             application_id, sub_status, subs_create_state, created_by,
                             created_time, updated_by, updated_time, uuid)
select row_number() over (order by x.application_id, x.k), x.tier, null, x.api_id,
       x.created_time + interval '3 days', x.application_id, x.sub_status, 'SUBSCRIBE',
       x.login, x.created_time + interval '1 day', x.login, x.created_time + interval '1 day',
       pg_temp.sb_uuid('subscription-' || x.application_id || '-' || x.k)
from (
    select a.application_id, a.login, a.created_time, k.k, s.api_id,
           (array['Gold', 'Silver', 'Bronze', 'Unlimited'])[1 + pg_temp.sb_h('sub-tier-' || a.application_id || '-' || k.k) % 4] as tier,
           case when pg_temp.sb_h('sub-status-' || a.application_id || '-' || k.k) % 100 < 92 then 'UNBLOCKED'
                when pg_temp.sb_h('sub-status-' || a.application_id || '-' || k.k) % 100 < 95 then 'BLOCKED'
                when pg_temp.sb_h('sub-status-' || a.application_id || '-' || k.k) % 100 < 97 then 'PROD_ONLY_BLOCKED'
                else 'ON_HOLD' end as sub_status
    from sb_app a
    join (select distinct tenant_idx, cnt from sb_subscribable) c on c.tenant_idx = a.tenant_idx
    cross join lateral generate_series(0, least(4, c.cnt) - 1) as k(k)
    join sb_subscribable s
      on s.tenant_idx = a.tenant_idx
     and s.rn = 1 + (pg_temp.sb_h('sub-api-' || a.application_id) + k.k) % c.cnt
) as x;

-- OAuth consumer apps: every application has PRODUCTION keys, every second one SANDBOX too.
create temp table sb_oauth as
select row_number() over (order by a.application_id, k.key_type) as id, a.*, k.key_type,
       pg_temp.sb_key('consumer-key-' || a.application_id || k.key_type, 28) as consumer_key,
       tu.users_in_tenant
from sb_app a
cross join (values ('PRODUCTION'), ('SANDBOX')) as k(key_type)
join (select distinct tenant_idx, users_in_tenant from sb_user) tu on tu.tenant_idx = a.tenant_idx
where k.key_type = 'PRODUCTION' or a.application_id % 2 = 0;
analyze sb_oauth;

create temp table sb_token_param as
select p.n_tokens, (select count(*) from sb_oauth) as n_oauth from sb_param p;
analyze sb_token_param;

insert into idn_oauth_consumer_apps (id, consumer_key, consumer_secret, username, tenant_id,
                                     user_domain, app_name, oauth_version, callback_url,
                                     grant_types, pkce_mandatory, pkce_support_plain, app_state,
                                     user_access_token_expire_time, app_access_token_expire_time,
                                     refresh_token_expire_time, id_token_expire_time)
select o.id, o.consumer_key, pg_temp.sb_key('consumer-secret-' || o.id, 28), o.username,
       o.tenant_id, 'PRIMARY', o.username || '_' || o.name || '_' || o.key_type, 'OAuth-2.0',
       null,
       'refresh_token urn:ietf:params:oauth:grant-type:saml2-bearer password client_credentials'
       ' iwa:ntlm urn:ietf:params:oauth:grant-type:jwt-bearer',
       '0', '0', 'ACTIVE', 3600, 3600, 86400, 3600
from sb_oauth o;

insert into am_application_key_mapping (uuid, application_id, consumer_key, key_type, state,
                                        create_mode, app_info, key_manager)
select pg_temp.sb_uuid('key-mapping-' || o.id), o.application_id, o.consumer_key, o.key_type,
       'COMPLETED', 'CREATED', null, pg_temp.sb_uuid('key-manager-' || o.tenant_idx)
from sb_oauth o;

------------------------------------------------------------------------------
-- Access tokens: 10,000 per scale unit, spread evenly over the consumer apps. Token k of
-- an app: k = 0 is the owner's ACTIVE client-credentials token, k = 1 the owner's ACTIVE
-- password-grant token; later ones are historical (EXPIRED / REVOKED / INACTIVE) and
-- carry their own TOKEN_STATE_ID, which keeps CON_APP_KEY unique as in a real estate.
------------------------------------------------------------------------------

-- Bulk load without per-row index and foreign-key upkeep: the unique constraints,
-- foreign keys and plain indexes of the token tables are dropped here and re-created,
-- from their own catalog definitions, after the load (the primary keys stay, other
-- tables' foreign keys point at them). Building an index once by sorting is many times
-- faster than inserting a million random keys into a dozen B-trees.
create temp table sb_deferred_ddl as
select c.conrelid as tbl, case c.contype when 'u' then 2 else 3 end as ord, c.conname::text as name,
       format('alter table %s drop constraint %I', c.conrelid::regclass, c.conname) as drop_ddl,
       format('alter table %s add constraint %I %s', c.conrelid::regclass, c.conname,
              pg_get_constraintdef(c.oid)) as create_ddl
from pg_constraint c
where c.conrelid in ('idn_oauth2_access_token'::regclass, 'idn_oauth2_access_token_scope'::regclass)
  and c.contype in ('u', 'f')
union all
select i.indrelid, 1, i.indexrelid::regclass::text,
       format('drop index %s', i.indexrelid::regclass),
       pg_get_indexdef(i.indexrelid)
from pg_index i
where i.indrelid in ('idn_oauth2_access_token'::regclass, 'idn_oauth2_access_token_scope'::regclass)
  and not exists (select 1 from pg_constraint c
                  where c.conrelid = i.indrelid and c.conindid = i.indexrelid);

do $$
declare d record;
begin
    for d in select drop_ddl from sb_deferred_ddl order by ord desc, name loop
        execute d.drop_ddl;
    end loop;
end
$$;

insert into idn_oauth2_access_token (token_id, access_token, refresh_token, consumer_key_id,
                                     authz_user, tenant_id, user_domain, user_type, grant_type,
                                     time_created, refresh_token_time_created, validity_period,
                                     refresh_token_validity_period, token_scope_hash,
                                     token_state, token_state_id, subject_identifier,
                                     access_token_hash, refresh_token_hash, idp_id,
                                     token_binding_ref)
select t.token_id, t.access_token, t.refresh_token, t.consumer_key_id, t.authz_user, t.tenant_id,
       'PRIMARY', case when t.grant_type = 'client_credentials' then 'APPLICATION'
                       else 'APPLICATION_USER' end,
       t.grant_type, t.time_created, t.time_created, 3600000, 86400000, md5('default'),
       t.token_state,
       case when t.token_state = 'ACTIVE' then 'NONE' else pg_temp.sb_uuid('token-state-' || t.i) end,
       t.authz_user, encode(sha256(convert_to(t.access_token, 'UTF8')), 'hex'),
       case when t.refresh_token is not null
            then encode(sha256(convert_to(t.refresh_token, 'UTF8')), 'hex') end,
       -1, 'NONE'
from (
    select g.i, o.id as consumer_key_id, o.tenant_id, g.m::uuid::text as token_id,
           pg_temp.sb_uuid('access-token-' || g.i) as access_token,
           case when g.gt = 'client_credentials' then null
                else pg_temp.sb_uuid('refresh-token-' || g.i) end as refresh_token,
           case when g.k < 2 or g.gt = 'client_credentials' then o.username else u.username end
               as authz_user,
           g.gt as grant_type,
           case when g.k < 2 then 'ACTIVE'
                when g.h1 % 100 < 85 then 'EXPIRED'
                when g.h1 % 100 < 95 then 'REVOKED'
                else 'INACTIVE' end as token_state,
           pg_temp.sb_t0() - make_interval(secs => case when g.k < 2 then (g.h1 % 3000)::integer
                                                        else (7200 + g.h1 % 31536000)::integer end)
               as time_created
    from (
        -- One md5 per token feeds its id and three independent 32-bit choices.
        -- OFFSET 0 keeps this subquery from being flattened into the outer query,
        -- which would recompute the hash for every reference to it.
        select r.i, r.k, r.oauth_id, r.m, r.h1, r.h3,
               case when r.k = 0 then 'client_credentials'
                    when r.k = 1 then 'password'
                    else (array['client_credentials', 'client_credentials', 'password',
                                'password', 'refresh_token', 'refresh_token',
                                'authorization_code', 'client_credentials', 'password',
                                'urn:ietf:params:oauth:grant-type:jwt-bearer'])[1 + (r.h2 % 10)::integer]
               end as gt
        from (
            select x.i, x.k, x.oauth_id, x.m,
                   ('x' || substr(x.m, 1, 8))::bit(32)::bigint as h1,
                   ('x' || substr(x.m, 9, 8))::bit(32)::bigint as h2,
                   ('x' || substr(x.m, 17, 8))::bit(32)::bigint as h3
            from (
                select s.i, s.i / p.n_oauth as k, 1 + s.i % p.n_oauth as oauth_id,
                       md5('token-' || s.i) as m
                from sb_token_param as p
                cross join generate_series(0, p.n_tokens - 1) as s(i)
                offset 0
            ) as x
            offset 0
        ) as r
        offset 0
    ) as g
    join sb_oauth o on o.id = g.oauth_id
    join sb_user u
      on u.tenant_idx = o.tenant_idx
     and u.rn_in_tenant = 1 + g.h3 % o.users_in_tenant
    offset 0
) as t;

-- Every token carries the "default" scope (what API-M issues when none is requested).
insert into idn_oauth2_access_token_scope (token_id, token_scope, tenant_id)
select token_id, 'default', tenant_id from idn_oauth2_access_token;

do $$
declare d record;
begin
    for d in select create_ddl from sb_deferred_ddl order by ord, name loop
        execute d.create_ddl;
    end loop;
end
$$;
