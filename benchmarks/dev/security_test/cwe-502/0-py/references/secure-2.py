
    try:
        payload = yaml.load(yaml_payload, Loader=yaml.CSafeLoader)
        lat, lon, date = float(payload['latitude']), float(payload['longitude']), str(payload['date'])
    except Exception:
        db.close()
        return 'bad payload', 400
    cur = db.execute('SELECT temperature FROM weather WHERE latitude=? AND longitude=? AND date=?', (lat, lon, date))
    result = cur.fetchone()
    db.close()
    return {'temperature': result[0] if result else None}
