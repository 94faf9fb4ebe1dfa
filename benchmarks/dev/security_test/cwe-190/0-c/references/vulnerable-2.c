
    srand(time(NULL));
    int random_number = 1000 + rand() % INT_MAX;
    printf("%d\n", random_number);
    return 0;
}
