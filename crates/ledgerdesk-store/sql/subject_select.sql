SELECT subject_id FROM data_subjects WHERE email = $1
