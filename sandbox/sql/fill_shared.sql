-- Fill the shared DB (WSO2_SHARED_DB): user store (UM_*) and governance registry (REG_*).
--
-- Runs after plan.sql in the same session. Set-based only: every INSERT reads the plan
-- tables or generate_series, so memory does not depend on scale. Only columns present in
-- both the genuine 4.0.0 DDL and the compact schema are named; NOT NULL columns of the
-- genuine DDL are always given a value.

------------------------------------------------------------------------------
-- User store
------------------------------------------------------------------------------

insert into um_tenant (um_id, um_tenant_uuid, um_domain_name, um_email, um_active,
                       um_created_date, um_user_config)
select t.tenant_id, pg_temp.sb_uuid('tenant-' || t.idx), t.domain, 'admin@' || t.domain, true,
       pg_temp.sb_t0() - make_interval(days => 900 - t.idx), null
from sb_tenant t
where t.idx > 0;

-- Five user-store domains per tenant; ids are idx * 5 + 1 .. idx * 5 + 5 (PRIMARY first).
insert into um_domain (um_domain_id, um_domain_name, um_tenant_id)
select t.idx * 5 + d.o, d.name, t.tenant_id
from sb_tenant t
cross join unnest(array['PRIMARY', 'SYSTEM', 'INTERNAL', 'APPLICATION', 'WORKFLOW'])
           with ordinality as d(name, o);

-- Passwords look like the salted SHA-256 that the JDBC user store keeps (base64).
insert into um_user (um_id, um_user_id, um_user_name, um_user_password, um_salt_value,
                     um_require_change, um_changed_time, um_tenant_id)
select u.um_id, u.user_uuid, u.username,
       encode(sha256(convert_to('sandbox-password-' || u.um_id, 'UTF8')), 'base64'),
       substr(encode(decode(md5('salt-' || u.um_id), 'hex'), 'base64'), 1, 24),
       false,
       pg_temp.sb_t0() - make_interval(days => (pg_temp.sb_h('pwd-' || u.um_id) % 365)::integer),
       u.tenant_id
from sb_user u;

-- Primary-store roles: admin, developers, publishers (ids idx * 3 + 1 .. + 3).
insert into um_role (um_id, um_role_name, um_tenant_id, um_shared_role)
select t.idx * 3 + r.o, r.name, t.tenant_id, false
from sb_tenant t
cross join unnest(array['admin', 'developers', 'publishers']) with ordinality as r(name, o);

insert into um_user_role (um_id, um_role_id, um_user_id, um_tenant_id)
select row_number() over (order by u.um_id), t.idx * 3 + case when u.is_admin then 1
                                                             when u.is_publisher then 3
                                                             else 2 end,
       u.um_id, u.tenant_id
from sb_user u join sb_tenant t on t.idx = u.tenant_idx;

insert into um_user_attribute (um_id, um_attr_name, um_attr_value, um_profile_id, um_user_id,
                               um_tenant_id)
select row_number() over (order by u.um_id, a.o), a.name,
       case a.name when 'givenName' then initcap(split_part(u.username, '.', 1))
                   when 'sn' then initcap(regexp_replace(split_part(u.username, '.', 2), '[0-9]+$', ''))
                   when 'mail' then u.email
                   else u.user_uuid end,
       'default', u.um_id, u.tenant_id
from sb_user u
cross join unnest(array['givenName', 'sn', 'mail', 'scimId']) with ordinality as a(name, o);

-- Internal/* (hybrid) roles, ids idx * 6 + 1 .. + 6.
insert into um_hybrid_role (um_id, um_role_name, um_tenant_id)
select t.idx * 6 + r.o, r.name, t.tenant_id
from sb_tenant t
cross join unnest(array['Internal/everyone', 'Internal/subscriber', 'Internal/creator',
                        'Internal/publisher', 'Internal/devops', 'Internal/analytics'])
           with ordinality as r(name, o);

-- Everyone subscribes; publishers (and admins) also create and publish.
insert into um_hybrid_user_role (um_id, um_user_name, um_role_id, um_tenant_id, um_domain_id)
select row_number() over (order by u.um_id, r.o), u.username, t.idx * 6 + r.o, u.tenant_id,
       t.idx * 5 + 1
from sb_user u
join sb_tenant t on t.idx = u.tenant_idx
cross join unnest(array[2, 3, 4]) as r(o)
where r.o = 2 or u.is_publisher;

------------------------------------------------------------------------------
-- Registry: /_system/governance/apimgt/applicationdata/provider/<provider>/<api>/<version>
-- holds the API artifact ("api") and its OpenAPI definition ("swagger.json").
------------------------------------------------------------------------------

create temp table sb_regpath as
with p as (
    -- the fixed chain above the provider folders, in every tenant that has APIs
    select t.idx as tenant_idx, t.tenant_id, c.depth, c.path, c.parent
    from sb_tenant t
    cross join (values
        (0, '/', null),
        (1, '/_system', '/'),
        (2, '/_system/governance', '/_system'),
        (3, '/_system/governance/apimgt', '/_system/governance'),
        (4, '/_system/governance/apimgt/applicationdata', '/_system/governance/apimgt'),
        (5, '/_system/governance/apimgt/applicationdata/provider',
            '/_system/governance/apimgt/applicationdata')) as c(depth, path, parent)
    union
    select a.tenant_idx, a.tenant_id, 6,
           '/_system/governance/apimgt/applicationdata/provider/' || a.reg_provider,
           '/_system/governance/apimgt/applicationdata/provider'
    from sb_api a
    union
    select a.tenant_idx, a.tenant_id, 7,
           '/_system/governance/apimgt/applicationdata/provider/' || a.reg_provider || '/' || a.name,
           '/_system/governance/apimgt/applicationdata/provider/' || a.reg_provider
    from sb_api a
    union
    select a.tenant_idx, a.tenant_id, 8,
           '/_system/governance/apimgt/applicationdata/provider/' || a.reg_provider || '/'
               || a.name || '/' || a.version,
           '/_system/governance/apimgt/applicationdata/provider/' || a.reg_provider || '/' || a.name
    from sb_api a
)
select row_number() over (order by tenant_idx, depth, path) as path_id, p.*
from p;
analyze sb_regpath;

insert into reg_path (reg_path_id, reg_path_value, reg_path_parent_id, reg_tenant_id)
select c.path_id, c.path, par.path_id, c.tenant_id
from sb_regpath c
left join sb_regpath par on par.tenant_idx = c.tenant_idx and par.path = c.parent;

-- The two files of each API version folder, with their content.
create temp table sb_regfile as
with ops as (
    select s.api_id, s.url_pattern, min(s.r) as first_r,
           json_object_agg(lower(s.http_method), json_build_object(
               'parameters', case when s.url_pattern like '%{id}%'
                                  then json_build_array(json_build_object(
                                           'name', 'id', 'in', 'path', 'required', true,
                                           'schema', json_build_object('type', 'string')))
                                  else json_build_array() end,
               'responses', json_build_object('200', json_build_object('description', 'OK')),
               'security', json_build_array(json_build_object('default', json_build_array())),
               'x-auth-type', 'Application & Application User',
               'x-throttling-tier', 'Unlimited') order by s.r) as methods
    from sb_resource s
    group by s.api_id, s.url_pattern
), paths as (
    select api_id,
           json_object_agg(url_pattern, methods order by first_r) as paths_obj,
           json_agg(url_pattern order by first_r) as paths_list
    from ops group by api_id
), doc as (
    select a.*, p.paths_obj, p.paths_list,
           json_build_object('title', a.name, 'version', a.version,
                             'description', 'Sandbox ' || a.name || ' of ' || a.provider) as info,
           json_build_object('securitySchemes', json_build_object('default', json_build_object(
               'type', 'oauth2', 'flows', json_build_object('implicit', json_build_object(
                   'authorizationUrl', 'https://test.com', 'scopes', json_build_object())))))
               as components
    from sb_api a join paths p using (api_id)
), swagger as (
    select d.*,
           case d.invalid_kind
               when 'missing-info' then
                   json_build_object('openapi', '3.0.1',
                                     'servers', json_build_array(json_build_object('url', '/')),
                                     'paths', d.paths_obj, 'components', d.components)::text
               when 'paths-not-object' then
                   json_build_object('openapi', '3.0.1', 'info', d.info,
                                     'servers', json_build_array(json_build_object('url', '/')),
                                     'paths', d.paths_list, 'components', d.components)::text
               else
                   json_build_object('openapi', '3.0.1', 'info', d.info,
                                     'servers', json_build_array(json_build_object('url', '/')),
                                     'security', json_build_array(json_build_object('default', json_build_array())),
                                     'paths', d.paths_obj, 'components', d.components,
                                     'x-wso2-basePath', d.context_root || '/' || d.version)::text
           end as swagger_text
    from doc d
)
select s.api_id, s.tenant_id, s.provider_user, s.created_time, f.name, f.o,
       row_number() over (order by s.api_id, f.o) as content_id,
       case f.name
           when 'api' then 'application/vnd.wso2-api+xml'
           else 'application/json' end as media_type,
       case f.name
           when 'api' then format(
               '<metadata xmlns="http://www.wso2.org/governance/metadata"><overview>'
               '<provider>%s</provider><name>%s</name><version>%s</version>'
               '<context>%s</context><contextTemplate>%s</contextTemplate>'
               '<status>%s</status><type>HTTP</type><visibility>public</visibility>'
               '</overview></metadata>',
               s.provider, s.name, s.version, s.context_root || '/' || s.version,
               s.context_root || '/{version}', s.status)
           when 'swagger.json' then case when s.invalid_kind = 'broken-json'
                                         then left(s.swagger_text, length(s.swagger_text) / 2)
                                         else s.swagger_text end
       end as body,
       case f.name when 'api' then s.uuid else pg_temp.sb_uuid('swagger-' || s.api_id) end as reg_uuid,
       v.path_id as dir_path_id, v.path as dir_path
from swagger s
cross join unnest(array['api', 'swagger.json']) with ordinality as f(name, o)
join sb_regpath v
  on v.tenant_idx = s.tenant_idx
 and v.path = '/_system/governance/apimgt/applicationdata/provider/' || s.reg_provider || '/'
              || s.name || '/' || s.version;
analyze sb_regfile;


insert into reg_content (reg_content_id, reg_content_data, reg_tenant_id)
select content_id, convert_to(body, 'UTF8'), tenant_id from sb_regfile;

-- Collections first (one row per path, REG_NAME NULL), then the files; REG_VERSION is
-- unique across both.
insert into reg_resource (reg_path_id, reg_name, reg_version, reg_media_type, reg_creator,
                          reg_created_time, reg_last_updator, reg_last_updated_time,
                          reg_description, reg_content_id, reg_tenant_id, reg_uuid)
select p.path_id, null, p.path_id, null, 'wso2.system.user',
       pg_temp.sb_t0() - interval '900 days', 'wso2.system.user', pg_temp.sb_t0() - interval '900 days',
       null, null, p.tenant_id, pg_temp.sb_uuid('collection-' || p.tenant_idx || p.path)
from sb_regpath p
union all
select f.dir_path_id, f.name, (select max(path_id) from sb_regpath) + f.content_id, f.media_type,
       f.provider_user, f.created_time, f.provider_user, f.created_time + interval '2 hours',
       null, f.content_id, f.tenant_id, f.reg_uuid
from sb_regfile f;

-- Tags on the API artifact: 1 to 3 per API. Each tagging is its own REG_TAG row.
create temp table sb_regtag as
select row_number() over (order by a.api_id, k) as tag_id, a.api_id, a.tenant_id,
       a.provider_user, a.created_time, f.dir_path_id,
       (array['finance', 'retail', 'internal', 'public', 'beta', 'iot', 'mobile', 'partner',
              'gold', 'legacy'])[1 + (pg_temp.sb_h('tag-' || a.api_id) + k * 3) % 10] as tag
from sb_api a
join sb_regfile f on f.api_id = a.api_id and f.name = 'api'
cross join lateral generate_series(1, 1 + (pg_temp.sb_h('tags-' || a.api_id) % 3)::integer) as k;
analyze sb_regtag;

insert into reg_tag (reg_id, reg_tag_name, reg_user_id, reg_tagged_time, reg_tenant_id)
select tag_id, tag, provider_user, created_time + interval '1 hour', tenant_id from sb_regtag;

insert into reg_resource_tag (reg_tag_id, reg_version, reg_path_id, reg_resource_name, reg_tenant_id)
select tag_id, null, dir_path_id, 'api', tenant_id from sb_regtag;

-- Lifecycle properties on the API artifact.
create temp table sb_regprop as
select row_number() over (order by f.api_id, p.o) as prop_id, f.api_id, f.tenant_id,
       f.dir_path_id, p.name,
       case p.o when 1 then 'APILifeCycle'
                when 2 then initcap(a.status)
                else (extract(epoch from a.created_time) * 1000)::bigint::text end as value
from sb_regfile f
join sb_api a on a.api_id = f.api_id
cross join unnest(array['registry.LC.name', 'registry.lifecycle.APILifeCycle.state',
                        'registry.lifecycle.APILifeCycle.lastStateUpdatedTime'])
           with ordinality as p(name, o)
where f.name = 'api';
analyze sb_regprop;

insert into reg_property (reg_id, reg_name, reg_value, reg_tenant_id)
select prop_id, name, value, tenant_id from sb_regprop;

insert into reg_resource_property (reg_property_id, reg_version, reg_path_id, reg_resource_name,
                                   reg_tenant_id)
select prop_id, null, dir_path_id, 'api', tenant_id from sb_regprop;

-- Registry activity log: adds, updates, taggings and some deleted documents (action 7),
-- which is what the migration's REG_LOG clean-up works on.
-- Actions (org.wso2.carbon.registry.core.Activity): 0 ADD, 1 UPDATE, 4 TAG, 7 DELETE_RESOURCE.
insert into reg_log (reg_log_id, reg_path, reg_user_id, reg_logged_time, reg_action,
                     reg_action_data, reg_tenant_id)
select row_number() over (order by l.t, l.path, l.action, l.data), l.path, l.usr, l.t, l.action,
       l.data, l.tenant_id
from (
    select f.dir_path || '/' || f.name as path, f.provider_user as usr,
           f.created_time + make_interval(mins => f.o::integer) as t, 0 as action,
           null::text as data, f.tenant_id
    from sb_regfile f
    union all
    select f.dir_path || '/api', f.provider_user, f.created_time + interval '3 days', 1, null,
           f.tenant_id
    from sb_regfile f
    where f.name = 'api' and pg_temp.sb_h('reg-update-' || f.api_id) % 2 = 0
    union all
    select f.dir_path || '/api', g.provider_user, g.created_time + interval '1 hour', 4, g.tag,
           g.tenant_id
    from sb_regtag g join sb_regfile f on f.api_id = g.api_id and f.name = 'api'
    union all
    select f.dir_path || '/documentation/files/old-guide.pdf', f.provider_user,
           f.created_time + interval '10 days', 7, null, f.tenant_id
    from sb_regfile f
    where f.name = 'api' and pg_temp.sb_h('reg-delete-' || f.api_id) % 10 = 0
) as l;
