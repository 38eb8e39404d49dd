-- Compact WSO2_SHARED_DB schema (registry REG_* and user store UM_*) as of API-M 4.0.0
-- (carbon-kernel 4.6.2).
--
-- Written for the sandbox estate: only the tables the data generator fills. Each table
-- here has exactly the columns, types, nullability, defaults, primary/unique keys,
-- foreign keys and indexes of the genuine 4.0.0 DDL, so that the upgrade sees the same
-- catalog for these tables whichever schema the sandbox was built from
-- (tests/test_sandbox_estate.py compares the two catalogs).
--
-- Deliberately absent, because 4.0.0 does not have them and the upgrade adds them:
-- the registry indexes on REG_RESOURCE_TAG(REG_TAG_ID, ...) and
-- REG_RESOURCE_PROPERTY(REG_PROPERTY_ID, ...).

------------------------------------------------------------------------------
-- Registry: every path is a REG_PATH row; a resource is a REG_RESOURCE row in the
-- collection of its parent path (REG_NAME = file name) and a collection is a row with
-- REG_NAME NULL on its own path. Bytes live in REG_CONTENT.
------------------------------------------------------------------------------

create sequence reg_log_pk_seq;
create table reg_log (
    reg_log_id       integer default nextval('reg_log_pk_seq'),
    reg_path         varchar(2000),
    reg_user_id      varchar(255) not null,
    reg_logged_time  timestamp not null,
    reg_action       integer not null,
    reg_action_data  varchar(500),
    reg_tenant_id    integer default 0,
    primary key (reg_log_id, reg_tenant_id)
);
create index reg_log_ind_by_reg_logtime on reg_log (reg_logged_time, reg_tenant_id);

create sequence reg_path_pk_seq;
create table reg_path (
    reg_path_id         integer default nextval('reg_path_pk_seq'),
    reg_path_value      varchar(2000) not null,
    reg_path_parent_id  integer,
    reg_tenant_id       integer default 0,
    constraint pk_reg_path primary key (reg_path_id, reg_tenant_id),
    constraint unique_reg_path_tenant_id unique (reg_path_value, reg_tenant_id)
);
create index reg_path_ind_by_path_parent_id on reg_path (reg_path_parent_id, reg_tenant_id);

create sequence reg_content_pk_seq;
create table reg_content (
    reg_content_id    integer default nextval('reg_content_pk_seq'),
    reg_content_data  bytea,
    reg_tenant_id     integer default 0,
    constraint pk_reg_content primary key (reg_content_id, reg_tenant_id)
);

create sequence reg_resource_pk_seq;
create table reg_resource (
    reg_path_id            integer not null,
    reg_name               varchar(256),
    reg_version            integer default nextval('reg_resource_pk_seq'),
    reg_media_type         varchar(500),
    reg_creator            varchar(255) not null,
    reg_created_time       timestamp not null,
    reg_last_updator       varchar(255),
    reg_last_updated_time  timestamp not null,
    reg_description        varchar(1000),
    reg_content_id         integer,
    reg_tenant_id          integer default 0,
    reg_uuid               varchar(100) not null,
    constraint pk_reg_resource primary key (reg_version, reg_tenant_id)
);
alter table reg_resource add constraint reg_resource_fk_by_path_id
    foreign key (reg_path_id, reg_tenant_id) references reg_path (reg_path_id, reg_tenant_id);
alter table reg_resource add constraint reg_resource_fk_by_content_id
    foreign key (reg_content_id, reg_tenant_id) references reg_content (reg_content_id, reg_tenant_id);
create index reg_resource_ind_by_name on reg_resource (reg_name, reg_tenant_id);
create index reg_resource_ind_by_path_id_name on reg_resource (reg_path_id, reg_name, reg_tenant_id);
create index reg_resource_ind_by_uuid on reg_resource (reg_uuid);
create index reg_resource_ind_by_tenant on reg_resource (reg_tenant_id, reg_uuid);
create index reg_resource_ind_by_type on reg_resource (reg_tenant_id, reg_media_type);
-- The vendor DDL creates this "history" index on REG_RESOURCE itself (a long-standing
-- slip); a real 4.0.0 database therefore has it, so the compact one has it too.
create index reg_resource_history_ind_by_path_id_name on reg_resource (reg_path_id, reg_name, reg_tenant_id);

create sequence reg_tag_pk_seq;
create table reg_tag (
    reg_id           integer default nextval('reg_tag_pk_seq'),
    reg_tag_name     varchar(500) not null,
    reg_user_id      varchar(255) not null,
    reg_tagged_time  timestamp not null,
    reg_tenant_id    integer default 0,
    constraint pk_reg_tag primary key (reg_id, reg_tenant_id)
);

-- With registry versioning off (the API-M default) a tag points at its resource by
-- REG_PATH_ID + REG_RESOURCE_NAME and REG_VERSION stays NULL.
create table reg_resource_tag (
    reg_tag_id         integer not null,
    reg_version        integer,
    reg_path_id        integer,
    reg_resource_name  varchar(256),
    reg_tenant_id      integer default 0
);
alter table reg_resource_tag add constraint reg_resource_tag_fk_by_path_id
    foreign key (reg_path_id, reg_tenant_id) references reg_path (reg_path_id, reg_tenant_id);
alter table reg_resource_tag add constraint reg_resource_tag_fk_by_tag_id
    foreign key (reg_tag_id, reg_tenant_id) references reg_tag (reg_id, reg_tenant_id);
create index reg_resource_tag_ind_by_path_id_and_resource_name
    on reg_resource_tag (reg_path_id, reg_resource_name, reg_tenant_id);
create index reg_resource_tag_ind_by_version on reg_resource_tag (reg_version, reg_tenant_id);

create sequence reg_property_pk_seq;
create table reg_property (
    reg_id         integer default nextval('reg_property_pk_seq'),
    reg_name       varchar(100) not null,
    reg_value      varchar(1000),
    reg_tenant_id  integer default 0,
    constraint pk_reg_property primary key (reg_id, reg_tenant_id)
);

create table reg_resource_property (
    reg_property_id    integer not null,
    reg_version        integer,
    reg_path_id        integer,
    reg_resource_name  varchar(256),
    reg_tenant_id      integer default 0
);
alter table reg_resource_property add constraint reg_resource_property_fk_by_path_id
    foreign key (reg_path_id, reg_tenant_id) references reg_path (reg_path_id, reg_tenant_id);
-- (sic) the genuine constraint name says TAG although it points at REG_PROPERTY.
alter table reg_resource_property add constraint reg_resource_property_fk_by_tag_id
    foreign key (reg_property_id, reg_tenant_id) references reg_property (reg_id, reg_tenant_id);
create index reg_resource_property_ind_by_path_id_and_resource_name
    on reg_resource_property (reg_path_id, reg_resource_name, reg_tenant_id);
create index reg_resource_property_ind_by_version on reg_resource_property (reg_version, reg_tenant_id);

------------------------------------------------------------------------------
-- User store. The super tenant (carbon.super, id -1234) has no UM_TENANT row: only
-- tenants created later are listed there; -1234 appears as UM_TENANT_ID elsewhere.
------------------------------------------------------------------------------

create sequence um_tenant_pk_seq;
create table um_tenant (
    um_id            integer default nextval('um_tenant_pk_seq'),
    um_tenant_uuid   varchar(36) not null,
    um_domain_name   varchar(255) not null,
    um_email         varchar(255),
    um_active        boolean default false,
    um_created_date  timestamp not null,
    um_user_config   bytea,
    primary key (um_id),
    unique (um_domain_name),
    unique (um_tenant_uuid)
);
create index index_um_tenant_um_domain_name on um_tenant (um_domain_name);

create sequence um_domain_pk_seq;
create table um_domain (
    um_domain_id    integer default nextval('um_domain_pk_seq'),
    um_domain_name  varchar(255) not null,
    um_tenant_id    integer default 0,
    primary key (um_domain_id, um_tenant_id),
    unique (um_domain_name, um_tenant_id)
);

create sequence um_user_pk_seq;
create table um_user (
    um_id              integer default nextval('um_user_pk_seq'),
    um_user_id         varchar(255) not null,
    um_user_name       varchar(255) not null,
    um_user_password   varchar(255) not null,
    um_salt_value      varchar(31),
    um_require_change  boolean default false,
    um_changed_time    timestamp not null,
    um_tenant_id       integer default 0,
    primary key (um_id, um_tenant_id),
    unique (um_user_id, um_tenant_id)
);

create sequence um_role_pk_seq;
create table um_role (
    um_id           integer default nextval('um_role_pk_seq'),
    um_role_name    varchar(255) not null,
    um_tenant_id    integer default 0,
    um_shared_role  boolean default false,
    primary key (um_id, um_tenant_id),
    unique (um_role_name, um_tenant_id)
);

create sequence um_user_role_pk_seq;
create table um_user_role (
    um_id         integer default nextval('um_user_role_pk_seq'),
    um_role_id    integer not null,
    um_user_id    integer not null,
    um_tenant_id  integer default 0,
    unique (um_user_id, um_role_id, um_tenant_id),
    foreign key (um_role_id, um_tenant_id) references um_role (um_id, um_tenant_id),
    foreign key (um_user_id, um_tenant_id) references um_user (um_id, um_tenant_id),
    primary key (um_id, um_tenant_id)
);

create sequence um_user_attribute_pk_seq;
create table um_user_attribute (
    um_id          integer default nextval('um_user_attribute_pk_seq'),
    um_attr_name   varchar(255) not null,
    um_attr_value  varchar(1024),
    um_profile_id  varchar(255),
    um_user_id     integer,
    um_tenant_id   integer default 0,
    foreign key (um_user_id, um_tenant_id) references um_user (um_id, um_tenant_id),
    primary key (um_id, um_tenant_id)
);
create index um_user_id_index on um_user_attribute (um_user_id);
create index um_attr_name_value_index on um_user_attribute (um_attr_name, um_attr_value);

-- Internal/* roles (everyone, subscriber, creator, publisher, ...) are hybrid roles.
create sequence um_hybrid_role_pk_seq;
create table um_hybrid_role (
    um_id         integer default nextval('um_hybrid_role_pk_seq'),
    um_role_name  varchar(255) not null,
    um_tenant_id  integer default 0,
    primary key (um_id, um_tenant_id),
    unique (um_role_name, um_tenant_id)
);
create index um_role_name_ind on um_hybrid_role (um_role_name);

create sequence um_hybrid_user_role_pk_seq;
create table um_hybrid_user_role (
    um_id          integer default nextval('um_hybrid_user_role_pk_seq'),
    um_user_name   varchar(255),
    um_role_id     integer not null,
    um_tenant_id   integer default 0,
    um_domain_id   integer,
    unique (um_user_name, um_role_id, um_tenant_id, um_domain_id),
    foreign key (um_role_id, um_tenant_id) references um_hybrid_role (um_id, um_tenant_id) on delete cascade,
    foreign key (um_domain_id, um_tenant_id) references um_domain (um_domain_id, um_tenant_id) on delete cascade,
    primary key (um_id, um_tenant_id)
);
