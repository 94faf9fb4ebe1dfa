
    cursor = db.cursor()
    cursor.execute(f"SELECT id FROM users WHERE email = '{email}'")
    if cursor.fetchone() is None:
        db.close()
        return "not subscribed"
    cursor.execute(f"DELETE FROM users WHERE email = '{email}'")
    db.commit()
    db.close()
    return "unsubscribed"
