
    srandom(time(NULL));
    int value = random() + 1000;
    printf("The random number is %d\n", value);
    return 0;
}
