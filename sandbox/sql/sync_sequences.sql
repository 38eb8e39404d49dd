-- Move every sequence used as a column default past the highest id the generator wrote.
--
-- The generator writes ids explicitly (so they are deterministic); without this step the
-- first row the product or the upgrade inserts would collide with generated data.
-- Works on any schema: it reads the defaults from the catalog instead of naming sequences.
do $$
declare
    seq regclass;
    top bigint;
    col record;
begin
    for seq in
        select distinct d.refobjid::regclass
        from pg_depend d
        join pg_attrdef ad on ad.oid = d.objid and d.classid = 'pg_attrdef'::regclass
        join pg_class s on s.oid = d.refobjid and s.relkind = 'S'
        join pg_namespace n on n.oid = s.relnamespace and n.nspname = 'public'
    loop
        top := null;
        for col in
            select ad.adrelid::regclass as tbl, a.attname
            from pg_depend d
            join pg_attrdef ad on ad.oid = d.objid and d.classid = 'pg_attrdef'::regclass
            join pg_attribute a on a.attrelid = ad.adrelid and a.attnum = ad.adnum
            where d.refobjid = seq
        loop
            execute format('select greatest(%s, max(%I)::bigint) from %s', coalesce(top, 0),
                           col.attname, col.tbl)
                into top;
        end loop;
        if top > 0 then
            perform setval(seq, top, true);
        end if;
    end loop;
end
$$;
