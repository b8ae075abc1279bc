"""Tables, engine and the queries the service layer shares."""
