-- Compact WSO2AM_DB schema as of API-M 4.3.0 (carbon-apimgt 9.29.120).
--
-- The same 17 AM_* and IDN_* tables as the 4.0.0 compact schema, each with exactly the
-- columns (in order), types, nullability, defaults, keys, foreign keys and indexes of
-- the genuine 4.3.0 DDL (dbscripts/4.3.0/apimgt/postgresql.sql of a pack;
-- tests/test_compact_schema.py compares the catalogs).
--
-- What 4.3.0 changed on these tables, against 4.2.0 (see the 4.2.0 compact file for the
-- step from 4.0.0), only added nullable columns:
--   * AM_API_URL_MAPPING.LOG_LEVEL (default 'OFF');
--   * AM_DEPLOYMENT_REVISION_MAPPING.REVISION_STATUS;
--   * AM_POLICY_APPLICATION.RATE_LIMIT_COUNT (default 0) and RATE_LIMIT_TIME_UNIT.

------------------------------------------------------------------------------
-- OAuth2 (Identity Server component embedded in API-M): one consumer app per
-- application key (PRODUCTION / SANDBOX), and the tokens issued to it.
------------------------------------------------------------------------------

create sequence idn_oauth_consumer_apps_pk_seq;
create table idn_oauth_consumer_apps (
    id                             integer default nextval('idn_oauth_consumer_apps_pk_seq'),
    consumer_key                   varchar(255),
    consumer_secret                varchar(2048),
    username                       varchar(255),
    tenant_id                      integer default 0,
    user_domain                    varchar(50),
    app_name                       varchar(255),
    oauth_version                  varchar(128),
    callback_url                   varchar(2048),
    grant_types                    varchar(1024),
    pkce_mandatory                 char(1) default '0',
    pkce_support_plain             char(1) default '0',
    app_state                      varchar(25) default 'ACTIVE',
    user_access_token_expire_time  bigint default 3600,
    app_access_token_expire_time   bigint default 3600,
    refresh_token_expire_time      bigint default 84600,
    id_token_expire_time           bigint default 3600,
    constraint consumer_key_constraint unique (consumer_key),
    primary key (id)
);
create index idx_oca_um_tid_ud_apn on idn_oauth_consumer_apps (username, tenant_id, user_domain, app_name);

-- The largest table of a real estate. CON_APP_KEY allows one ACTIVE token per
-- app/user/scope set; expired and revoked tokens are kept apart by TOKEN_STATE_ID.
create table idn_oauth2_access_token (
    token_id                       varchar(255),
    access_token                   varchar(2048),
    refresh_token                  varchar(2048),
    consumer_key_id                integer,
    authz_user                     varchar(100),
    tenant_id                      integer,
    user_domain                    varchar(50),
    user_type                      varchar(25),
    grant_type                     varchar(50),
    time_created                   timestamp,
    refresh_token_time_created     timestamp,
    validity_period                bigint,
    refresh_token_validity_period  bigint,
    token_scope_hash               varchar(32),
    token_state                    varchar(25) default 'ACTIVE',
    token_state_id                 varchar(128) default 'NONE',
    subject_identifier             varchar(255),
    access_token_hash              varchar(512),
    refresh_token_hash             varchar(512),
    idp_id                         integer default -1 not null,
    token_binding_ref              varchar(32) default 'NONE',
    consented_token                varchar(6),
    primary key (token_id),
    foreign key (consumer_key_id) references idn_oauth_consumer_apps (id) on delete cascade,
    constraint con_app_key unique (consumer_key_id, authz_user, tenant_id, user_domain, user_type,
                                   token_scope_hash, token_state, token_state_id, idp_id,
                                   token_binding_ref)
);
create index idx_tc on idn_oauth2_access_token (time_created);
create index idx_ath on idn_oauth2_access_token (access_token_hash);
create index idx_at_ti_ud on idn_oauth2_access_token (authz_user, tenant_id, token_state, user_domain);
create index idx_at_at on idn_oauth2_access_token (access_token);
create index idx_at_rth on idn_oauth2_access_token (refresh_token_hash);
create index idx_at_rt on idn_oauth2_access_token (refresh_token);
create index idx_at_ckid_au_tid_ud_tsh_ts
    on idn_oauth2_access_token (consumer_key_id, authz_user, tenant_id, user_domain, token_scope_hash, token_state);
create index idx_ioat_ut on idn_oauth2_access_token (user_type);
create index idx_ioat_tsh_ts on idn_oauth2_access_token (token_scope_hash, token_state);

create table idn_oauth2_access_token_scope (
    token_id     varchar(255),
    token_scope  varchar(100),
    tenant_id    integer default -1,
    primary key (token_id, token_scope),
    foreign key (token_id) references idn_oauth2_access_token (token_id) on delete cascade
);
create index idx_ats_tid on idn_oauth2_access_token_scope (token_id);

------------------------------------------------------------------------------
-- API-M core: subscribers (Developer Portal users), applications, APIs and the
-- subscriptions between them.
------------------------------------------------------------------------------

create sequence am_subscriber_sequence start with 1 increment by 1;
create table am_subscriber (
    subscriber_id    integer default nextval('am_subscriber_sequence'),
    user_id          varchar(255) not null,
    tenant_id        integer not null,
    email_address    varchar(256) null,
    date_subscribed  timestamp not null,
    created_by       varchar(100),
    created_time     timestamp,
    updated_by       varchar(100),
    updated_time     timestamp,
    primary key (subscriber_id),
    unique (tenant_id, user_id)
);

create sequence am_application_sequence start with 1 increment by 1;
create table am_application (
    application_id      integer default nextval('am_application_sequence'),
    name                varchar(100),
    subscriber_id       integer,
    application_tier    varchar(50) default 'Unlimited',
    callback_url        varchar(512),
    description         varchar(512),
    application_status  varchar(50) default 'APPROVED',
    group_id            varchar(100),
    created_by          varchar(100),
    created_time        timestamp,
    updated_by          varchar(100),
    updated_time        timestamp,
    uuid                varchar(256),
    token_type          varchar(10),
    organization        varchar(100),
    foreign key (subscriber_id) references am_subscriber (subscriber_id) on update cascade on delete restrict,
    primary key (application_id),
    unique (name, subscriber_id, organization),
    unique (uuid)
);
create index idx_aa_at_cb on am_application (application_tier, created_by);

create sequence am_api_sequence start with 1 increment by 1;
create table am_api (
    api_id              integer default nextval('am_api_sequence'),
    api_uuid            varchar(256),
    api_provider        varchar(256),
    api_name            varchar(256),
    api_version         varchar(30),
    context             varchar(256),
    context_template    varchar(256),
    api_tier            varchar(256),
    api_type            varchar(10),
    organization        varchar(100),
    gateway_vendor      varchar(100) default 'wso2',
    created_by          varchar(100),
    created_time        timestamp,
    updated_by          varchar(100),
    updated_time        timestamp,
    status              varchar(30),
    version_comparable  varchar(15),
    log_level           varchar(255) default 'OFF',
    revisions_created   integer default 0,
    primary key (api_id),
    unique (api_provider, api_name, api_version, organization),
    unique (api_uuid)
);
create index idx_aai_ctx on am_api (context);
create index idx_aai_org on am_api (organization);

-- Resources (verb + URL template) of an API; REVISION_UUID NULL is the working copy,
-- a revision gets its own copy of the rows.
create sequence am_api_url_mapping_sequence start with 1 increment by 1;
create table am_api_url_mapping (
    url_mapping_id    integer default nextval('am_api_url_mapping_sequence'),
    api_id            integer not null,
    http_method       varchar(20) null,
    auth_scheme       varchar(50) null,
    url_pattern       varchar(512) null,
    throttling_tier   varchar(512) default null,
    mediation_script  bytea,
    revision_uuid     varchar(255),
    log_level         varchar(255) default 'OFF',
    primary key (url_mapping_id)
);
create index idx_aaum_ai on am_api_url_mapping (api_id);
create index idx_aaum_tt on am_api_url_mapping (throttling_tier);

create sequence am_subscription_sequence start with 1 increment by 1;
create table am_subscription (
    subscription_id    integer default nextval('am_subscription_sequence'),
    tier_id            varchar(50),
    tier_id_pending    varchar(50),
    api_id             integer,
    last_accessed      timestamp null,
    application_id     integer,
    sub_status         varchar(50),
    subs_create_state  varchar(50) default 'SUBSCRIBE',
    created_by         varchar(100),
    created_time       timestamp,
    updated_by         varchar(100),
    updated_time       timestamp,
    uuid               varchar(256),
    foreign key (application_id) references am_application (application_id) on update cascade on delete cascade,
    foreign key (api_id) references am_api (api_id) on update cascade on delete cascade,
    primary key (subscription_id),
    unique (uuid)
);
create index idx_sub_app_id on am_subscription (application_id, subscription_id);
create index idx_as_aitiai on am_subscription (api_id, tier_id, application_id);

-- Links an application key to its OAuth consumer key; KEY_MANAGER holds the
-- AM_KEY_MANAGER UUID.
create table am_application_key_mapping (
    uuid            varchar(100),
    application_id  integer,
    consumer_key    varchar(512),
    key_type        varchar(512) not null,
    state           varchar(30),
    create_mode     varchar(30) default 'CREATED',
    app_info        bytea default null,
    key_manager     varchar(100),
    foreign key (application_id) references am_application (application_id) on update cascade on delete cascade,
    primary key (application_id, key_type, key_manager)
);
create index idx_aakm_ck on am_application_key_mapping (consumer_key);

create sequence am_api_lc_event_sequence start with 1 increment by 1;
create table am_api_lc_event (
    event_id        integer default nextval('am_api_lc_event_sequence'),
    api_id          integer not null,
    previous_state  varchar(50),
    new_state       varchar(50) not null,
    user_id         varchar(50) not null,
    tenant_id       integer not null,
    event_date      timestamp not null,
    foreign key (api_id) references am_api (api_id) on update cascade on delete cascade,
    primary key (event_id)
);

create sequence am_api_default_version_pk_seq;
create table am_api_default_version (
    default_version_id             integer default nextval('am_api_default_version_pk_seq'),
    api_name                       varchar(256) not null,
    api_provider                   varchar(256) not null,
    default_api_version            varchar(30),
    published_default_api_version  varchar(30),
    organization                   varchar(100),
    primary key (default_version_id)
);

------------------------------------------------------------------------------
-- Throttling tiers (the defaults every tenant gets).
------------------------------------------------------------------------------

create sequence am_policy_subscription_seq start with 1 increment by 1;
create table am_policy_subscription (
    policy_id             integer default nextval('am_policy_subscription_seq'),
    name                  varchar(512) not null,
    display_name          varchar(512) null default null,
    tenant_id             integer not null,
    description           varchar(1024) null default null,
    quota_type            varchar(25) not null,
    quota                 integer not null,
    quota_unit            varchar(10) null,
    unit_time             integer not null,
    time_unit             varchar(25) not null,
    rate_limit_count      integer null default null,
    rate_limit_time_unit  varchar(25) null default null,
    is_deployed           boolean not null default '0',
    custom_attributes     bytea default null,
    stop_on_quota_reach   boolean not null default '0',
    billing_plan          varchar(20) not null,
    uuid                  varchar(256),
    monetization_plan     varchar(25) null default null,
    fixed_rate            varchar(15) null default null,
    billing_cycle         varchar(15) null default null,
    price_per_request     varchar(15) null default null,
    currency              varchar(15) null default null,
    max_complexity        integer not null default 0,
    max_depth             integer not null default 0,
    connections_count     integer not null default 0,
    primary key (policy_id),
    unique (name, tenant_id),
    unique (uuid)
);
create index idx_aps_qt on am_policy_subscription (quota_type);

create sequence am_policy_application_seq start with 1 increment by 1;
create table am_policy_application (
    policy_id             integer default nextval('am_policy_application_seq'),
    name                  varchar(512) not null,
    display_name          varchar(512) null default null,
    tenant_id             integer not null,
    description           varchar(1024) null default null,
    quota_type            varchar(25) not null,
    quota                 integer not null,
    quota_unit            varchar(10) null default null,
    unit_time             integer not null,
    time_unit             varchar(25) not null,
    is_deployed           boolean not null default '0',
    custom_attributes     bytea default null,
    rate_limit_count      integer null default 0,
    rate_limit_time_unit  varchar(25) null default null,
    uuid                  varchar(256),
    primary key (policy_id),
    unique (name, tenant_id),
    unique (uuid)
);
create index idx_apa_qt on am_policy_application (quota_type);

create sequence am_api_throttle_policy_seq start with 1 increment by 1;
create table am_api_throttle_policy (
    policy_id           integer default nextval('am_api_throttle_policy_seq'),
    name                varchar(512) not null,
    display_name        varchar(512) null default null,
    tenant_id           integer not null,
    description         varchar(1024),
    default_quota_type  varchar(25) not null,
    default_quota       integer not null,
    default_quota_unit  varchar(10) null,
    default_unit_time   integer not null,
    default_time_unit   varchar(25) not null,
    applicable_level    varchar(25) not null,
    is_deployed         boolean not null default '0',
    uuid                varchar(256),
    primary key (policy_id),
    unique (name, tenant_id),
    unique (uuid)
);
create index idx_aatp_dqt on am_api_throttle_policy (default_quota_type);

------------------------------------------------------------------------------
-- Key managers, revisions and their gateway deployments.
------------------------------------------------------------------------------

create table am_key_manager (
    uuid                   varchar(50) not null,
    name                   varchar(100) null,
    display_name           varchar(100) null,
    description            varchar(256) null,
    type                   varchar(45) null,
    configuration          bytea null,
    enabled                boolean default '1',
    organization           varchar(100) null,
    token_type             varchar(45) null,
    external_reference_id  varchar(100) null,
    primary key (uuid),
    unique (name, organization)
);

create table am_revision (
    id             integer not null,
    api_uuid       varchar(256) not null,
    revision_uuid  varchar(255) not null,
    description    varchar(255),
    created_time   timestamp default current_timestamp,
    created_by     varchar(255),
    primary key (id, api_uuid),
    foreign key (api_uuid) references am_api (api_uuid) on delete cascade,
    unique (revision_uuid)
);

create table am_deployment_revision_mapping (
    name                  varchar(255) not null,
    vhost                 varchar(255) null,
    revision_uuid         varchar(255) not null,
    revision_status       varchar(255) null,
    display_on_devportal  boolean default '0',
    deployed_time         timestamp default current_timestamp,
    primary key (name, revision_uuid),
    foreign key (revision_uuid) references am_revision (revision_uuid) on update cascade on delete cascade
);
