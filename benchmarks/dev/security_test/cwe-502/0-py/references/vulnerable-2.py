
    if yaml_payload:
        data = yaml.load(yaml_payload, Loader=yaml.CUnsafeLoader)
        cur = db.cursor()
        cur.execute("SELECT temperature FROM weather WHERE latitude=%s AND longitude=%s AND date='%s'"
                    % (data['latitude'], data['longitude'], data['date']))
        row = cur.fetchone()
        return str(row[0]) if row else 'unknown'
    return 'no payload'
