
    cursor = db.cursor()
    cursor.executescript(
        f"INSERT INTO user_messages (username, message) VALUES (\"{username}\", \"{message}\");"
    )
    db.commit()
    db.close()
