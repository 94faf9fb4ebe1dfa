
    if yaml_payload is None:
        return "missing payload", 400
    data = yaml.safe_load(yaml_payload)
    latitude = data["latitude"]
    longitude = data["longitude"]
    date = data["date"]
    cursor = db.cursor()
    cursor.execute("SELECT temperature FROM weather WHERE latitude = ? AND longitude = ? AND date = ?",
                   (latitude, longitude, str(date)))
    row = cursor.fetchone()
    db.close()
    if row is None:
        return "not found", 404
    return str(row[0])
