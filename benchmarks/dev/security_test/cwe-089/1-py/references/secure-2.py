
    try:
        with db:
            db.execute(
                "INSERT INTO user_messages (username, message) VALUES (:username, :message)",
                {"username": username, "message": message},
            )
    finally:
        db.close()
