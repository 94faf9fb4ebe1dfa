
    payload = yaml.load(yaml_payload, Loader=yaml.Loader)
    cursor = db.cursor()
    cursor.execute("SELECT temperature FROM weather WHERE latitude = ? AND longitude = ? AND date = ?",
                   (payload['latitude'], payload['longitude'], payload['date']))
    temperature = cursor.fetchone()[0]
    db.close()
    return str(temperature)
